"""Bad input gets a clear error and changes nothing: oversized front-end messages, unknown
keyword arguments, and settings that generation would refuse."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatwidget.catalog import ModelSpec
from chatwidget.engine.streaming import validate_request
from chatwidget.engine.types import GenerationSettings
from chatwidget.errors import InvalidGenerationRequestError
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.widget import ChatWidget
from chatwidget.widget.protocol import MAX_ID_CHARS, MAX_TEXT_BYTES
from tests.widget.frontend import FrontEnd

TINY = DEMO_TINY_REPO
HUGE = "x" * (MAX_TEXT_BYTES + 1)
HUGE_IN_UTF8 = "é" * (MAX_TEXT_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
LONG_ID = "a" * (MAX_ID_CHARS + 1)


def test_unknown_keyword_names_the_nearest_valid_one() -> None:
    with pytest.raises(TypeError, match="'tokn'; did you mean 'token'"):
        ChatWidget(tokn="hf_x")
    with pytest.raises(TypeError, match="'cachedir'; did you mean 'cache_dir'"):
        ChatWidget(cachedir="/tmp/x")
    with pytest.raises(
        TypeError, match="valid ones: cache_dir, endpoint, history, keep_alive, layout"
    ):
        ChatWidget(zzzzzz=1)


def test_oversized_front_end_messages_are_refused_and_change_nothing(
    make_chat: Callable[..., ChatWidget],
) -> None:
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    front = FrontEnd(chat)
    cid = chat.conversation_id
    before = (chat.conversations, chat.messages, chat.settings)
    cases = [
        ({"kind": "send", "text": HUGE}, "1 MB"),
        ({"kind": "send", "text": HUGE_IN_UTF8}, "1 MB"),
        ({"kind": "rename_conversation", "conversation_id": cid, "title": HUGE}, "1 MB"),
        ({"kind": "set_settings", "settings": {"system_prompt": HUGE}}, "1 MB"),
        ({"kind": "switch_conversation", "conversation_id": LONG_ID}, f"{MAX_ID_CHARS}"),
        ({"kind": "select_model", "repo_id": "org/" + LONG_ID}, f"{MAX_ID_CHARS}"),
        ({"kind": "set_settings", "settings": {LONG_ID: 1}}, "short name"),
    ]
    for n, (content, says) in enumerate(cases):
        reply = front.intent({"id": f"big{n}", **content})
        assert reply["ok"] is False, content["kind"]
        assert says in reply["error"]
        assert len(reply["error"]) < 500  # the value is never echoed back
        assert reply["id"] == f"big{n}"
    reply = front.intent({"id": LONG_ID, "kind": "stop"})
    assert reply["ok"] is False
    assert reply["id"] == ""  # an oversized id is not echoed either
    assert chat.wait_until_idle(30)
    assert (chat.conversations, chat.messages, chat.settings) == before
    # Just under the limits is fine.
    ok = front.request("rename_conversation", conversation_id=cid, title="t" * MAX_TEXT_BYTES)
    assert ok["ok"] is True


def test_settings_check_and_generation_agree_on_temperature_zero(
    make_chat: Callable[..., ChatWidget],
) -> None:
    """Whatever the settings check accepts, generation accepts, and the other way round:
    with sampling, temperature 0 is refused by both, in the same words; greedy, it is fine."""
    chat = make_chat()
    chat.select_model(TINY)
    assert chat.wait_until_idle(120)
    history = [{"role": "user", "content": "hi"}]
    for temperature in (0, 0.0, 1e-9, 0.7):
        for do_sample in (False, True):
            changes = {"temperature": temperature, "do_sample": do_sample, "max_new_tokens": 4}
            settings = GenerationSettings(
                temperature=float(temperature), do_sample=do_sample, max_new_tokens=4
            )
            try:
                validate_request(history, settings)
                engine_error = None
            except InvalidGenerationRequestError as exc:
                engine_error = str(exc)
            try:
                chat.set_settings(**changes)
                widget_error = None
            except ValueError as exc:
                widget_error = str(exc)
            assert widget_error == engine_error, (temperature, do_sample)
            if widget_error is None:  # what the check accepts really generates
                handle = chat.send("hello")
                handle.wait(60)
                assert handle.result is not None
                assert handle.result.usage.new_tokens == 4
    assert chat.session.settings.temperature == 0.7  # refused changes changed nothing


def test_settings_out_of_bounds_say_what_to_enter(make_chat: Callable[..., ChatWidget]) -> None:
    chat = make_chat(models=[ModelSpec(TINY)])
    for changes, says in (
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1 to 32768"),
        ({"max_new_tokens": 2.5}, "whole number"),
        ({"temperature": 9}, "temperature must be a number from 0.0 to 5.0"),
        ({"top_p": 0}, "top_p must be a number from 0.01 to 1.0"),
        ({"do_sample": "yes"}, "do_sample must be true or false"),
        ({"colour": "blue"}, "Unknown settings ['colour']"),
    ):
        with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
            chat.set_settings(**changes)
