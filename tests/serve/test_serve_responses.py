"""POST /v1/responses and GET /v1/responses/{id}, driven by the official openai client
against a live server whose model is a scripted token source (tests/serve/helpers.py)."""

import json

import pytest

from tests.serve.helpers import Script, analysis_then_final, final, last_user, weather_model

pytest_plugins = ["tests.conftest_harmony"]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def echo(serve, encoding):
    script = Script(encoding, lambda p: analysis_then_final(f"About {last_user(p)}.", f"Hi {last_user(p)}!"))
    return serve(script), script


def test_non_streaming_reasoning_and_answer(echo):
    server, script = echo
    response = server.client().responses.create(model="tiny", input="Ada", instructions="Be brief.",
                                                 reasoning={"effort": "low"}, temperature=0.5, top_p=0.9)
    assert response.status == "completed" and response.output_text == "Hi Ada!"
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "About Ada."
    assert message.type == "message" and message.status == "completed"
    usage = response.usage
    assert usage.output_tokens == script.runs[0].planned and usage.output_tokens_details.reasoning_tokens > 0
    prompt = script.prompts[0]
    assert "Reasoning: low" in prompt and "# Instructions\n\nBe brief." in prompt
    assert prompt.endswith("<|start|>assistant")
    assert (script.samplings[0].temperature, script.samplings[0].top_p) == (0.5, 0.9)


def test_streamed_events_are_complete_and_numbered(echo):
    server, _ = echo
    events = list(server.client().responses.create(model="tiny", input="Bo", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    for item in ("reasoning_text", "output_text"):
        assert f"response.{item}.delta" in kinds and f"response.{item}.done" in kinds
    assert kinds.count("response.content_part.added") == kinds.count("response.content_part.done") == 2
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hi Bo!" and events[-1].response.output_text == "Hi Bo!"
    assert events[-1].response.usage.total_tokens > 0


def test_stream_helper_accumulates_the_final_response(echo):
    server, _ = echo
    with server.client().responses.stream(model="tiny", input="Cy") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert "".join(deltas) == "Hi Cy!" == response.output_text


def test_previous_response_id_continues_and_get_returns_the_response(echo):
    server, script = echo
    client = server.client()
    first = client.responses.create(model="tiny", input="first question")
    second = client.responses.create(model="tiny", input="second question", previous_response_id=first.id)
    assert second.output_text == "Hi second question!" and second.previous_response_id == first.id
    first_turn = "<|start|>user<|message|>first question<|end|><|start|>assistant<|channel|>final<|message|>"
    second_turn = "<|start|>user<|message|>second question<|end|><|start|>assistant"
    assert first_turn + "Hi first question!<|end|>" + second_turn in script.prompts[1]
    assert "About first question" not in script.prompts[1]  # harmony drops answered turns' reasoning
    fetched = client.responses.retrieve(second.id)
    assert fetched.output_text == second.output_text and fetched.id == second.id


def test_store_false_is_not_kept(echo):
    server, _ = echo
    client = server.client()
    response = client.responses.create(model="tiny", input="x", store=False)
    import openai

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="tiny", input="y", previous_response_id=response.id)
    assert error.value.body["param"] == "previous_response_id"


def test_function_call_round_trip_with_previous_response_id(serve, encoding):
    script = Script(encoding, weather_model)
    client = serve(script).client()
    first = client.responses.create(model="tiny", input="Paris", tools=[WEATHER])
    call = first.output[-1]
    assert first.status == "completed" and call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    assert "type get_weather = (_: {" in script.prompts[0]
    second = client.responses.create(
        model="tiny", previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.output_text == "It is sunny."
    assert ("<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
            '{"city": "Paris"}<|call|>') in script.prompts[1]


def test_function_call_streamed_and_continued_statelessly(serve, encoding):
    script = Script(encoding, weather_model)
    client = serve(script).client()
    with client.responses.stream(model="tiny", input="Oslo", tools=[WEATHER], store=False) as stream:
        events = list(stream)
        response = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    call = response.output[-1]
    assert json.loads(deltas) == {"city": "Oslo"} == json.loads(done[0].arguments) == json.loads(call.arguments)
    reasoning = response.output[0]
    second = client.responses.create(model="tiny", tools=[WEATHER], input=[
        {"role": "user", "content": "Oslo"},
        reasoning,
        call,
        {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
    ])
    assert second.output_text == "It is rainy."
    assert "<|channel|>analysis<|message|>Need weather.<|end|>" in script.prompts[1]


def test_python_builtin_tool_runs_on_the_server(serve, encoding):
    from tritonllm.tools.python_sandbox import PythonTool

    def model(prompt):
        if "<|start|>python to=assistant" in prompt:
            return final("Done: " + prompt.rsplit("<|message|>", 1)[1].split("<|end|>")[0].strip())
        return "<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>"

    script = Script(encoding, model)
    server = serve(script, builtin_tools={"python": PythonTool})
    response = server.client().responses.create(
        model="tiny", input="6*7?", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]
    )
    tool_call, _ = response.output
    assert tool_call.type == "code_interpreter_call" and tool_call.code == "print(6 * 7)"
    assert tool_call.outputs[0].logs.strip() == "42" and response.output_text == "Done: 42"
    assert "## python" in script.prompts[0] and len(script.prompts) == 2


def test_output_limit_gives_an_incomplete_response(serve, encoding):
    script = Script(encoding, lambda p: final("one two three four five six"))
    client = serve(script).client()
    response = client.responses.create(model="tiny", input="count", max_output_tokens=5)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5 and script.runs[0].given == 5
    events = list(client.responses.create(model="tiny", input="count", max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output[0].status == "incomplete"


def test_broken_harmony_is_streamed_as_text(serve, encoding):
    script = Script(encoding, lambda p: "<|channel|>final<|message|>fine<|end|>not harmony at all<|return|>")
    events = list(serve(script).client().responses.create(model="tiny", input="x", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "finenot harmony at all"
    assert [o.type for o in events[-1].response.output] == ["message", "message"]
