"""A chat page in the browser over the TritonLLM server (`python -m tritonllm.serve`).

    pip install -e ".[ui]"
    python -m tritonllm.serve /path/to/checkpoint &
    streamlit run streamlit_chat.py

It talks to the server's Responses API with the official `openai` client: answers stream in
token by token, the model's reasoning goes into a collapsible section above the answer, and
each turn continues the previous one through `previous_response_id`. The sidebar holds the
server URL (default http://127.0.0.1:8000/v1, or the environment variable
TRITONLLM_SERVER_URL), an optional API key, the reasoning effort, the browser and python
tools, temperature and max tokens, and a button that starts a new conversation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import openai
import streamlit as st

DEFAULT_URL = os.environ.get("TRITONLLM_SERVER_URL", "http://127.0.0.1:8000/v1")
BROWSER_TOOL = {"type": "web_search_preview"}
PYTHON_TOOL = {"type": "code_interpreter", "container": {"type": "auto"}}
TOOL_CALLS = ("web_search_call", "code_interpreter_call")  # output items of the server running a tool


@dataclass
class Settings:
    """What the sidebar chose for the next request."""

    url: str
    api_key: str
    effort: str
    browser: bool
    python: bool
    temperature: float
    max_tokens: int

    def tools(self) -> list[dict]:
        """The server's built-in tools that are switched on."""
        return [tool for tool, on in ((BROWSER_TOOL, self.browser), (PYTHON_TOOL, self.python)) if on]


def new_conversation() -> None:
    """Forgets the messages shown and the server-side conversation they continue."""
    st.session_state.messages = []
    st.session_state.response_id = None


def sidebar_settings() -> Settings:
    """Draws the sidebar and returns its current values."""
    with st.sidebar:
        st.header("TritonLLM")
        url = st.text_input("Server URL", DEFAULT_URL, on_change=new_conversation)
        api_key = st.text_input("API key (optional)", type="password")
        effort = st.radio("Reasoning effort", ["low", "medium", "high"], index=1, horizontal=True)
        browser = st.toggle("Browser tool")
        python = st.toggle("Python tool")
        temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.05)
        max_tokens = st.number_input("Max tokens", min_value=1, value=1024, step=1)
        st.button("New conversation", on_click=new_conversation)
    return Settings(url.strip(), api_key.strip(), effort, browser, python, temperature, max_tokens)


def show_message(message: dict) -> None:
    """Draws one message of the history."""
    with st.chat_message(message["role"]):
        if message.get("reasoning"):
            with st.expander("Reasoning"):
                st.markdown(message["reasoning"])
        if message.get("content"):
            st.markdown(message["content"])
        elif message["role"] == "assistant" and not message.get("error"):
            st.caption("(no answer text)")
        if message.get("footer"):
            st.caption(message["footer"])
        if message.get("error"):
            getattr(st, message["level"])(message["error"])


def render_history() -> None:
    """Draws the conversation so far."""
    for message in st.session_state.messages:
        show_message(message)


def describe_error(error: openai.OpenAIError, url: str) -> tuple[str, str]:
    """The Streamlit level ("error" or "warning") and the sentence to show for a failed request."""
    if isinstance(error, openai.APIConnectionError):
        return "error", f"Cannot reach the server at {url}. Is `python -m tritonllm.serve` running there?"
    if not isinstance(error, openai.APIStatusError):
        return "error", f"The request failed: {error}"
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or error.message
    wait = error.response.headers.get("retry-after")
    if error.status_code in (429, 503) and wait:
        return "warning", f"The server is busy (HTTP {error.status_code}): please retry in {wait} s. {message}"
    if isinstance(error, openai.AuthenticationError):
        return "error", f"The server wants a valid API key (see the sidebar): {message}"
    return "error", f"The server returned an error (HTTP {error.status_code}): {message}"


def tool_call_text(item) -> str:
    """What a builtin tool call did, for the reasoning section."""
    if item.type == "web_search_call":
        action = item.action
        what = getattr(action, "query", None) or getattr(action, "url", None) or getattr(action, "pattern", "")
        return f"*browser ({action.type}):* {what}"
    logs = "".join(getattr(out, "logs", "") for out in item.outputs or []).rstrip()
    return f"*python:*\n```python\n{item.code}\n```\n```\n{logs}\n```"


def footer(response) -> str:
    """The line under a finished answer: tokens written and why it stopped early, if it did."""
    text = f"{response.usage.output_tokens} tokens" if response.usage else ""
    if response.incomplete_details:
        text += f", cut off ({response.incomplete_details.reason})"
    return text


def apply_event(answer: dict, event) -> None:
    """Adds what one streamed event says to `answer`: text, reasoning, a tool call, the end or an error."""
    if event.type == "response.output_item.added":
        key = {"reasoning": "reasoning", "message": "content"}.get(event.item.type)
        if key and answer[key]:  # a new paragraph for the next reasoning or message item
            answer[key] += "\n\n"
    elif event.type == "response.reasoning_text.delta":
        answer["reasoning"] += event.delta
    elif event.type == "response.output_text.delta":
        answer["content"] += event.delta
    elif event.type == "response.output_item.done" and event.item.type in TOOL_CALLS:
        answer["reasoning"] += ("\n\n" if answer["reasoning"] else "") + tool_call_text(event.item)
    elif event.type in ("response.completed", "response.incomplete"):
        answer.update(response_id=event.response.id, footer=footer(event.response))
    elif event.type == "response.failed":
        answer.update(level="error", error=f"The answer failed: {event.response.error.message}")
    elif event.type == "error":
        answer.update(level="error", error=f"The answer failed: {event.message}")


def stream_answer(settings: Settings, prompt: str) -> dict:
    """Sends `prompt`, shows the answer while it streams in and returns it as a history message."""
    client = openai.OpenAI(base_url=settings.url, api_key=settings.api_key or "none", max_retries=0)
    answer = {"role": "assistant", "content": "", "reasoning": ""}
    with st.chat_message("assistant"):
        reasoning_slot, answer_area = st.empty(), st.empty()
        reasoning_area = None  # the expander's content, once there is reasoning to show
        answer_area.caption("Waiting for the model…")
        try:
            stream = client.responses.create(
                input=prompt,
                previous_response_id=st.session_state.response_id,
                reasoning={"effort": settings.effort},
                tools=settings.tools(),
                temperature=settings.temperature,
                max_output_tokens=settings.max_tokens,
                stream=True,
            )
            for event in stream:
                reasoning, content = answer["reasoning"], answer["content"]
                apply_event(answer, event)
                if answer["reasoning"] != reasoning:
                    if reasoning_area is None:
                        reasoning_area = reasoning_slot.expander("Reasoning", expanded=True).empty()
                    reasoning_area.markdown(answer["reasoning"])
                if answer["content"] != content:
                    answer_area.markdown(answer["content"] + "▌")
        except openai.OpenAIError as error:
            answer["level"], answer["error"] = describe_error(error, settings.url)
    return answer


def main() -> None:
    """The page: sidebar, history, then the answer to a newly typed message."""
    st.set_page_config(page_title="TritonLLM chat", page_icon="💬")
    if "messages" not in st.session_state:
        new_conversation()
    settings = sidebar_settings()
    render_history()
    if prompt := st.chat_input("Message gpt-oss"):
        user = {"role": "user", "content": prompt}
        st.session_state.messages.append(user)
        show_message(user)
        answer = stream_answer(settings, prompt)
        st.session_state.response_id = answer.pop("response_id", st.session_state.response_id)
        st.session_state.messages.append(answer)
        st.rerun()


main()
