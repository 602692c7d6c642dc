"""A kernel for the widget history tests: a real process running a headless ChatWidget.

    python history_kernel.py write ENDPOINT CACHE HISTORY   # chats, prints the state, exits
    python history_kernel.py reply ENDPOINT CACHE HISTORY REPO  # a long reply until killed

``write`` prints one JSON line with what a restore must show. ``reply`` prints
``{"message_id"}`` once the reply streams, then ``{"t", "chars"}`` every 50 ms (the reply's
text length so far), until the test SIGKILLs it. ``REPO`` is a model that never ends its
reply early (a parrot with a 2,048-token context), so the reply lasts seconds.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from chatwidget import ChatWidget
from chatwidget.testing.models import DEMO_TINY_B_REPO, DEMO_TINY_REPO


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def state(chat: ChatWidget) -> dict[str, object]:
    s = chat.session
    out = []
    for conv in s.conversations():
        out.append(
            {
                "id": conv.id,
                "title": conv.title,
                "model": conv.model,
                "messages": [[m.role, m.content, m.status, m.model] for m in s.messages(conv.id)],
            }
        )
    settings = dataclasses.asdict(s.settings)
    return {"conversations": out, "active": chat.conversation_id, "settings": settings}


def write(chat: ChatWidget) -> None:
    chat.select_model(DEMO_TINY_REPO)
    if not chat.wait_until_idle(120):
        sys.exit("the model did not load")
    chat.set_settings(max_new_tokens=12, system_prompt="Be brief.", temperature=0.5)
    chat.send("First question").wait(120)
    chat.send("Second question").wait(120)
    first = chat.conversation_id
    chat.rename_conversation(first, "Kept across kernels")
    chat.new_conversation("On model B")
    chat.select_model(DEMO_TINY_B_REPO)
    if not chat.wait_until_idle(120):
        sys.exit("model B did not load")
    chat.send("Hello B").wait(120)
    chat.switch_conversation(first)
    assert chat.wait_until_idle(60)
    say(**state(chat))
    chat.close()


def reply(chat: ChatWidget, repo: str) -> None:
    deltas = chat.session.deltas
    chat.select_model(repo)
    if not chat.wait_until_idle(120):
        sys.exit("the model did not load")
    chat.set_settings(max_new_tokens=4)
    chat.send("A short one").wait(120)
    chat.set_settings(max_new_tokens=32768)
    handle = chat.send("Tell me a very long story.")
    if not handle.wait_for_first_token(120):
        sys.exit("no first token")
    say(message_id=handle.message_id)
    while not handle.done:
        text = deltas.text(handle.message_id)
        say(t=time.time(), chars=len(text or ""))
        time.sleep(0.05)  # a progress report every 50 ms, not a wait for a condition
    sys.exit(f"the reply ended before the kill: {handle.result}")


def main() -> None:
    mode, endpoint, cache, history = sys.argv[1:5]
    models = [DEMO_TINY_REPO, DEMO_TINY_B_REPO, *sys.argv[5:]]
    chat = ChatWidget(models=models, endpoint=endpoint, cache_dir=cache, history=history)
    if mode == "write":
        write(chat)
    else:
        reply(chat, sys.argv[5])


if __name__ == "__main__":
    main()
