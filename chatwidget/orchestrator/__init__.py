"""Per-conversation intent, the serialized download/load queue, and the lifecycle."""

from chatwidget.orchestrator.events import (
    ErrorReported,
    Event,
    Evicted,
    NoteChanged,
    ProgressChanged,
    StateChanged,
    Switched,
)
from chatwidget.orchestrator.lifecycle import TRANSITIONS, ModelState, check_transition
from chatwidget.orchestrator.orchestrator import (
    PHASE_GENERATING,
    PHASE_LOADING,
    Orchestrator,
    UnloadResult,
)
from chatwidget.orchestrator.policy import MemoryPolicy
from chatwidget.orchestrator.ports import DownloaderPort, EnginePort, Message
from chatwidget.orchestrator.snapshot import ConversationStatus, ModelStatus, OrchestratorSnapshot

__all__ = [
    "PHASE_GENERATING",
    "PHASE_LOADING",
    "TRANSITIONS",
    "ConversationStatus",
    "DownloaderPort",
    "EnginePort",
    "ErrorReported",
    "Event",
    "Evicted",
    "MemoryPolicy",
    "Message",
    "ModelState",
    "ModelStatus",
    "NoteChanged",
    "Orchestrator",
    "OrchestratorSnapshot",
    "ProgressChanged",
    "StateChanged",
    "Switched",
    "UnloadResult",
    "check_transition",
]
