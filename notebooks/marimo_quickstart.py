"""chatwidget in marimo: the quickstart as a reactive notebook.

Run it offline (the bundled local hub with tiny models, no network):

    ./scripts/demo.sh --marimo                      # or, by hand:
    CHATWIDGET_OFFLINE=1 .venv/bin/marimo edit notebooks/marimo_quickstart.py

Without ``CHATWIDGET_OFFLINE=1`` it downloads real small instruct models from the Hugging
Face Hub. ``marimo run`` serves it as an app.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo

    mo.md(
        """
        # chatwidget in marimo

        Chat with local Hugging Face models, switch models mid-conversation, and watch
        downloads in the download manager, without ever blocking the chat.

        With `CHATWIDGET_OFFLINE=1` this notebook uses the **bundled local hub with tiny
        models**: tiny Llama models with random weights and a real tokenizer and chat
        template. They download, load and stream like real models, but **their replies
        are gibberish**. Without it, real small instruct models come from the Hub.
        """
    )
    return (mo,)


@app.cell
def _():
    from chatwidget import ChatWidget, offline

    if offline.enabled():
        # Tiny random-weight models from the bundled local hub (see the note above).
        chat = ChatWidget(**offline.widget_kwargs())
        chat.set_settings(max_new_tokens=40)  # gibberish anyway: keep it short
        FIRST, SECOND = "demo/tiny-chat", "demo/small-chat"
    else:
        FIRST, SECOND = "HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"
        chat = ChatWidget(models=[FIRST, SECOND, "HuggingFaceTB/SmolLM2-360M-Instruct"])
    return FIRST, SECOND, chat, offline


@app.cell
def _(chat, mo):
    # The widget: chat on the left, the model selector on top, downloads on the right.
    # Everything happens in the widget itself; state set from the kernel's worker threads
    # reaches it directly, and no cell has to run again for that.
    widget = mo.ui.anywidget(chat)
    widget
    return


@app.cell
def _(FIRST, SECOND, mo, offline):
    mo.md(f"""
    ## Try it

    1. Pick **{FIRST}** in the *Model* list: it is queued, downloaded and loaded, and
       the download manager shows its progress.
    2. Send a message: the reply streams in; *Stop* ends it early, and *Regenerate*
       writes it again.
    3. Pick **{SECOND}** and keep chatting on the first model while it downloads.
       When it is ready, the conversation switches to it and a toast says
       *Switched to {SECOND}*. *Cancel* on a download asks for confirmation first.

    Source of the models: **{"the bundled local hub" if offline.enabled() else "the Hugging Face Hub"}**.
    """)
    return


if __name__ == "__main__":
    app.run()
