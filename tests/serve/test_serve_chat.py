"""POST /v1/chat/completions, driven by the official openai client against a live server
whose model is a scripted token source (tests/serve/helpers.py)."""

import json

import pytest

from tests.serve.helpers import Script, analysis_then_final, final, last_user, weather_model, wait_for
from tritonllm.serve import Sampling
from tritonllm.serve.stop_text import StopText

pytest_plugins = ["tests.conftest_harmony"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_completion_with_reasoning_content_and_sampling(serve, encoding):
    script = Script(encoding, lambda p: analysis_then_final("Thinking.", f"Hello {last_user(p)}."))
    client = serve(script).client()
    completion = client.chat.completions.create(
        model="tiny", temperature=0.3, top_p=0.8, seed=7, reasoning_effort="high",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Ann"}],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == "Hello Ann."
    assert choice.message.reasoning_content == "Thinking." and completion.object == "chat.completion"
    assert completion.usage.completion_tokens == script.runs[0].planned and completion.usage.prompt_tokens > 0
    assert script.samplings == [Sampling(0.3, 0.8, 7)]
    assert "Reasoning: high" in script.prompts[0] and "# Instructions\n\nBe kind." in script.prompts[0]


def test_streamed_chunks(serve, encoding):
    script = Script(encoding, lambda p: analysis_then_final("Thinking.", f"Hello {last_user(p)}."))
    chunks = list(serve(script).client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Bo"}], stream=True, stream_options={"include_usage": True}
    ))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == script.runs[0].planned
    deltas = [c.choices[0].delta for c in chunks[:-1]]
    assert "".join(d.content or "" for d in deltas) == "Hello Bo."
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Thinking."
    assert chunks[-2].choices[0].finish_reason == "stop" and len({c.id for c in chunks}) == 1


def test_tool_call_round_trip(serve, encoding):
    script = Script(encoding, weather_model)
    client = serve(script).client()
    messages = [{"role": "user", "content": "Paris"}]
    first = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is sunny." and second.choices[0].finish_reason == "stop"
    prompt = script.prompts[1]
    assert "<|channel|>analysis<|message|>Need weather.<|end|>" in prompt  # reasoning_content was sent back
    assert '<|constrain|>json<|message|>{"city": "Paris"}<|call|>' in prompt


def test_streamed_tool_call(serve, encoding):
    chunks = list(serve(Script(encoding, weather_model)).client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER], stream=True
    ))
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments for tc in calls)) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_cuts_the_answer_and_the_generation(serve, encoding, stream):
    script = Script(encoding, lambda p: final("one two three four five six seven eight"), delay=0.02)
    result = serve(script).client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "count"}], stop=["thr", "zzz"], stream=stream
    )
    if stream:
        chunks = list(result)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        reason = chunks[-1].choices[0].finish_reason
    else:
        text, reason = result.choices[0].message.content, result.choices[0].finish_reason
    assert text == "one two " and reason == "stop"
    assert wait_for(lambda: script.runs[0].closed) and script.runs[0].given < script.runs[0].planned


def test_max_tokens_gives_length(serve, encoding):
    script = Script(encoding, lambda p: final("one two three four five six"))
    completion = serve(script).client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "count"}], max_completion_tokens=5
    )
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 5


def test_stop_text_holds_back_a_possible_stop_across_pieces():
    stop = StopText(["STOP", "\n\n"])
    assert [stop.feed(p) for p in ("ab", "cST", "x S", "TO", "Pyz")] == ["ab", "c", "STx ", "", ""]
    assert stop.stopped and stop.flush() == ""
    stop = StopText(["END"])
    assert stop.feed("xE") == "x" and stop.flush() == "E" and not stop.stopped
