"""A loopback OpenAI-compatible chat-completions server that tests can script.

The fake LLM provider of the tests and the benchmarks. It is a real
HTTP server (Starlette on uvicorn, one process, 127.0.0.1) speaking the
OpenAI chat-completions protocol, streaming and non-streaming, so that code
under test exercises its genuine HTTP client, SSE parsing, retries, timeouts
and cancellation paths instead of a mock.

Behaviour is chosen per call by a *scenario key*: the content of the last
message with role ``user``. Tests register scenarios through a small control
API (``PUT /_scenarios/{key}``) to script tokens, per-token delays, failures
to answer before streaming (status, ``Retry-After``) or in the middle of a stream (after
some tokens, an OpenAI-style error object, then the stream ends) and whether usage is
reported. Unscripted keys are echoed back as ``"echo:"`` followed by
``" word"`` for each word of the key. Every call is recorded, including
whether and when (server monotonic clock) the client dropped the stream
before it finished, and can be read back with ``GET /_scenarios/{key}/calls``.

A scenario is a JSON object (``LLMControl.script`` builds it)::

    {
      "tokens": ["Hel", "lo"],        # the text answer, one streamed chunk per token
      "delay": 0.02,                  # seconds before each chunk (default 0)
      "failures": [                   # answered, in order, before any completion (default none)
        {"status": 503, "retry_after": 2, "body": "busy"}
      ],                              # a failure may also say "after_tokens": n (sent mid-stream)
                                      # and "at_round": n (only the call at that tool round)
      "usage": true,                  # report usage when the client asks for it (default true)
      "tool_rounds": [                # tool calls answered before the text (default none)
        [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}", "id": "call_1"}],
        [{"name": "a", "arguments": "{}"}, {"name": "b", "arguments": "{}"}]
      ],
      "piece_chars": 8                # tool arguments are streamed this many characters a piece
    }

With ``tool_rounds``, the answer depends on how far the conversation got: a request holding
``n`` assistant messages with ``tool_calls`` is answered with round ``n`` (its calls streamed in
pieces as OpenAI does: per call, a first delta with ``index``, ``id``, ``type`` and the
function's ``name``, then deltas of ``arguments``; ``finish_reason`` ``tool_calls``), and once
every round is answered, with the ``tokens``. A call without ``id`` gets
``call_<round>_<index>``. As OpenAI does, a request whose ``tool`` messages do not answer the
calls of the assistant message before them (each ``tool_call_id`` once, none missing) is refused
with 400.

``scenarios`` holds what was scripted and the call log, ``completions`` speaks the protocol,
``server`` is the application (run it by hand with ``python -m teststack.llm.server --port P``),
``process.LLMServerProcess`` runs it as a child process and ``control.LLMControl`` is a small
synchronous client of the control API.
"""
