"""One wire vocabulary: js/src/protocol.ts is generated from chatwidget/widget/protocol.py."""

from __future__ import annotations

import dataclasses
import typing

from chatwidget.engine.types import GenerationSettings
from chatwidget.orchestrator import ModelState
from chatwidget.session import PARTS
from chatwidget.widget import ChatWidget, protocol, servers, tsgen, views
from chatwidget.widget.chat_widget import HISTORY_INTENTS, MODEL_INTENTS, SERVER_INTENTS


def test_regenerating_protocol_ts_changes_nothing() -> None:
    committed = tsgen.TARGET.read_text(encoding="utf-8")
    assert committed == tsgen.render(), (
        "js/src/protocol.ts is out of date: run `python -m chatwidget.widget.tsgen`"
    )


def test_the_generated_file_carries_pythons_settings_defaults_and_bounds() -> None:
    text = tsgen.TARGET.read_text(encoding="utf-8")
    defaults = dataclasses.asdict(GenerationSettings())
    assert defaults == protocol.DEFAULT_SETTINGS
    for name, value in defaults.items():
        shown = tsgen._literal(value)
        assert f"  {name}: {shown},\n" in text
    assert "temperature: { min: 0, max: 5, step: 0.05, integer: false }" in text


def test_every_state_label_and_trait_is_in_the_vocabulary() -> None:
    labels = set(typing.get_args(protocol.StateLabel))
    assert labels == {state.value for state in ModelState}
    synced = set(ChatWidget.class_trait_names(sync=True)) - set(
        ChatWidget.__mro__[1].class_trait_names(sync=True)
    )
    # compare_state (protocol.CompareState) has a publisher of its own, outside seq
    assert "compare_state" in synced
    synced.discard("compare_state")
    assert synced == set(typing.get_type_hints(protocol.WidgetState))
    rendered = {t for part in PARTS for t in views.TRAITS[part]} | {"seq"}
    assert rendered | {servers.TRAIT} == synced  # the servers' trait: the widget's ServerBook


def test_every_intent_kind_is_checked_and_dispatched() -> None:
    source = set(ChatWidget._dispatch.__code__.co_consts)
    for area, kinds in (
        (ChatWidget._model_intent, MODEL_INTENTS),
        (ChatWidget._server_intent, SERVER_INTENTS),
        (ChatWidget._history_intent, HISTORY_INTENTS),
    ):
        cases = set(area.__code__.co_consts) & set(protocol.INTENT_FIELDS)
        assert cases == kinds, f"{area.__name__} handles {cases}, routed {kinds}"
        source |= cases
    for kind in protocol.INTENT_FIELDS:
        assert kind in source, f"{kind} is in the protocol but not dispatched"
