"""`lmforge chat CONFIG`: talk to a model in the terminal, answers streamed as they are generated.

Commands at the prompt: `clear` forgets the conversation, `exit` (or end of input) leaves. The system prompt
is `default_system` from the config or `--system`.
"""

from __future__ import annotations

import argparse
import sys

from lmforge.config import load_inference_config


def chat_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge chat", description="Chat with a model in the terminal.")
    parser.add_argument("config", help="YAML/JSON with model_name_or_path (and adapter_name_or_path, template, ...)")
    # default=[]: without one, argparse calls a missing '*' positional required ('config, overrides')
    parser.add_argument("overrides", nargs="*", default=[], help="key=value pairs that override the file")
    parser.add_argument("--system", default=None, help="system prompt (default: the config's default_system)")
    args = parser.parse_args(argv)

    cfg = load_inference_config(args.config, args.overrides)  # config errors before torch loads
    from lmforge.inference.engine import ChatEngine

    engine = ChatEngine(cfg)
    print(f"lmforge chat: {engine.model_name} (template {engine.template.name}). "
          "Type 'clear' to start over, 'exit' to leave.", flush=True)
    history: list[dict] = []
    while True:
        try:
            query = input("\nUser: ")
        except EOFError:
            print()
            return 0
        command = query.strip().lower()
        if command == "exit":
            return 0
        if command == "clear":
            history = []
            print("History cleared.", flush=True)
            continue
        if not query.strip():
            continue
        history.append({"role": "user", "content": query})
        print("Assistant: ", end="", flush=True)
        answer = []
        for piece in engine.stream(history, system=args.system):
            answer.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(answer)})
