"""The tools the model can call in a chat: browser, python and apply_patch."""
