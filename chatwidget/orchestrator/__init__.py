"""Per-conversation intent, the serialized download/load queue, and the lifecycle."""

from chatwidget.orchestrator.events import (
    ErrorReported,
    Event,
    Evicted,
    ProgressChanged,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.lifecycle import TRANSITIONS, ModelState, check_transition
from chatwidget.orchestrator.orchestrator import Orchestrator
from chatwidget.orchestrator.ports import DownloaderPort, EnginePort, Message
from chatwidget.orchestrator.snapshot import ConversationStatus, ModelStatus, OrchestratorSnapshot

__all__ = [
    "TRANSITIONS",
    "ConversationStatus",
    "DownloaderPort",
    "EnginePort",
    "ErrorReported",
    "Event",
    "Evicted",
    "Message",
    "ModelState",
    "ModelStatus",
    "Orchestrator",
    "OrchestratorSnapshot",
    "ProgressChanged",
    "StateChanged",
    "Switched",
    "check_transition",
]
