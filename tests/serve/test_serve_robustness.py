"""The server under load and abuse: concurrent clients, disconnects, a full queue, bad
input of every kind, authentication, and the probes (health, readiness, models)."""

import http.client
import json
import threading

import openai
import pytest

from tests.serve.helpers import Script, final, last_user, wait_for

pytest_plugins = ["tests.conftest_harmony"]


def raw(server, method: str, path: str, body=None, headers=None) -> tuple[int, dict, dict]:
    """One plain HTTP request (no client library in the way): status, headers, JSON body."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    status, head, payload = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return status, {k.lower(): v for k, v in head.items()}, json.loads(payload) if payload else {}


def assert_error(body: dict, param=None) -> dict:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture
def slow(encoding):
    """A model that takes 50 ms per token over a long answer."""
    return Script(encoding, lambda p: final("word " * 200), delay=0.05)


def test_sixteen_concurrent_streams_never_cross(serve, encoding):
    script = Script(encoding, lambda p: final(f"answer for {last_user(p)} " * 3), delay=0.002)
    server = serve(script)
    results: dict[int, str] = {}

    def client_(i: int):
        client = server.client()
        if i % 2:
            stream = client.responses.create(model="tiny", input=f"client-{i}", stream=True)
            results[i] = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        else:
            stream = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"client-{i}"}], stream=True
            )
            results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=client_, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {i: results.get(i) for i in range(16)} == {i: f"answer for client-{i} " * 3 for i in range(16)}


def test_a_client_that_disconnects_stops_its_generation(serve, slow):
    server = serve(slow)
    client = server.client()
    stream = client.responses.create(model="tiny", input="long", stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    assert wait_for(lambda: slow.runs[0].closed, timeout=5)
    assert slow.runs[0].given < 20  # of 202: stopped within a token or two of the disconnect
    slow.delay = 0
    assert client.responses.create(model="tiny", input="next").output_text.startswith("word")
    assert server.backend.admitted == 0


def test_a_non_streaming_client_that_disconnects_stops_its_generation(serve, slow):
    server = serve(slow)
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "long"}]})
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    assert wait_for(lambda: slow.runs and slow.runs[0].given >= 2)
    connection.close()
    assert wait_for(lambda: slow.runs[0].closed, timeout=5) and slow.runs[0].given < 20
    assert wait_for(lambda: server.backend.admitted == 0, timeout=5)


def test_a_full_queue_answers_429_with_retry_after(serve, slow):
    server = serve(slow, max_queue=1)
    client = server.client()
    running = client.responses.create(model="tiny", input="a", stream=True)
    next(iter(running))
    waiting = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "b"}], stream=True)
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="tiny", input="c")
    assert refused.value.response.headers["retry-after"] == "1" and refused.value.code == "rate_limit_exceeded"
    assert_error(refused.value.response.json())
    running.close()
    waiting.close()
    assert wait_for(lambda: server.backend.admitted == 0, timeout=5)
    slow.delay = 0
    assert client.responses.create(model="tiny", input="d").status == "completed"


@pytest.fixture
def server(serve, encoding):
    return serve(Script(encoding, lambda p: final("ok")), context_length=300)


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/responses", {"model": "tiny", "input": "x", "bogus": 1}, "bogus"),
        ("/v1/responses", {"model": "tiny", "input": [{"role": "user", "content": "x", "colour": 1}]},
         "input[0].colour"),
        ("/v1/responses", {"model": "tiny"}, "input"),
        ("/v1/responses", {"model": "tiny", "input": "x", "temperature": 5}, "temperature"),
        ("/v1/responses", {"model": "tiny", "input": "x", "temperature": "hot"}, "temperature"),
        ("/v1/responses", {"model": "tiny", "input": "x", "top_p": 0}, "top_p"),
        ("/v1/responses", {"model": "tiny", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ("/v1/responses", {"model": "tiny", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ("/v1/responses", {"model": "tiny", "input": "x", "tools": [{"type": "function", "name": "a b"}]},
         "tools[0].name"),
        ("/v1/responses", {"model": "tiny", "input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ("/v1/responses", {"model": "tiny", "input": [{"type": "function_call_output", "call_id": "nope",
                                                        "output": "1"}]}, "input[0].call_id"),
        ("/v1/responses", {"model": "tiny", "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ("/v1/responses", {"model": "tiny", "input": "word " * 400}, "input"),
        ("/v1/responses", {"model": "tiny", "input": "x", "max_output_tokens": 1000}, "input"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "seed": 2**70},
         "seed"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "tool", "tool_call_id": "c1",
                                                                 "content": "x"}]}, "messages[0].tool_call_id"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
         "logprobs"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "word " * 400}]},
         "messages"),
    ],
)
def test_bad_requests_get_400_naming_the_parameter(server, path, body, param):
    status, _, answer = raw(server, "POST", path, body)
    error = assert_error(answer, param)
    assert status == 400 and error["type"] == "invalid_request_error"
    if error["code"] == "unknown_parameter":
        assert error["message"] == f"Unrecognized request argument supplied: {param}"


def test_unknown_fields_through_the_client(server):
    with pytest.raises(openai.BadRequestError) as error:
        server.client().responses.create(model="tiny", input="x", extra_body={"frobnicate": True})
    assert error.value.body["param"] == "frobnicate" and "frobnicate" in error.value.message


def test_malformed_bodies_unknown_models_routes_and_ids(server):
    for body in (b'{"model": "tiny", "input": ', b"[1, 2]", b"\xff\xfe", b""):
        status, _, answer = raw(server, "POST", "/v1/responses", body)
        assert status == 400, body
        assert_error(answer)
    status, _, answer = raw(server, "POST", "/v1/chat/completions", {"model": "gpt-9", "messages": [
        {"role": "user", "content": "x"}]})
    assert status == 404 and assert_error(answer, "model")["code"] == "model_not_found"
    assert raw(server, "GET", "/v1/nothing")[0] == 404 and "error" in raw(server, "GET", "/v1/nothing")[2]
    assert raw(server, "GET", "/v1/chat/completions")[0] == 405
    status, _, answer = raw(server, "GET", "/v1/responses/resp_missing")
    assert status == 404 and assert_error(answer)
    assert server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])


def test_api_key_is_required_and_checked(serve, encoding):
    server = serve(Script(encoding, lambda p: final("ok")), api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").responses.create(model="tiny", input="x")
    status, headers, answer = raw(server, "GET", "/v1/models")
    assert status == 401 and assert_error(answer)["code"] == "missing_api_key" and headers["www-authenticate"]
    assert server.client(api_key="s3cret").responses.create(model="tiny", input="x").output_text == "ok"
    assert raw(server, "GET", "/health")[0] == 200  # probes stay open


def test_probes_models_and_loading(serve, encoding):
    loaded = threading.Event()
    script = Script(encoding, lambda p: final("ok"))

    def load():
        loaded.wait(30)
        return script.factory

    server = serve(load=load)
    assert raw(server, "GET", "/health") == (200, raw(server, "GET", "/health")[1], {"status": "ok"})
    status, headers, answer = raw(server, "GET", "/ready")
    assert status == 503 and headers["retry-after"] == "1" and assert_error(answer)["code"] == "model_not_ready"
    with pytest.raises(openai.InternalServerError):
        server.client().responses.create(model="tiny", input="x")
    loaded.set()
    server.wait_ready()
    assert raw(server, "GET", "/ready")[0] == 200
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"] and server.client().models.retrieve("tiny").id == "tiny"


def test_a_model_that_fails_to_load_is_reported(serve):
    def load():
        raise OSError("no such checkpoint")

    server = serve(load=load)
    assert wait_for(lambda: server.backend.load_error is not None)
    status, _, answer = raw(server, "GET", "/ready")
    assert status == 503 and "no such checkpoint" in assert_error(answer)["message"]


def test_a_model_failure_mid_stream_is_reported_and_the_next_request_served(serve, encoding):
    def model(prompt):
        if "explode" in prompt:
            raise RuntimeError("kernel fault")
        return final("fine")

    server = serve(Script(encoding, model))
    client = server.client()
    events = list(client.responses.create(model="tiny", input="explode", stream=True))
    assert events[-1].type == "response.failed" and "kernel fault" in events[-1].response.error.message
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "explode"}])
    with pytest.raises(openai.APIError, match="kernel fault"):
        list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "explode"}],
                                            stream=True))
    assert client.responses.create(model="tiny", input="calm").output_text == "fine"


def test_an_oversize_body_gets_413_and_the_server_goes_on(server):
    from tritonllm.serve.middleware import MAX_BODY_BYTES

    huge = b'{"model": "tiny", "input": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    status, _, answer = raw(server, "POST", "/v1/responses", huge)
    assert status == 413 and assert_error(answer)["code"] == "request_too_large"
    assert server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
