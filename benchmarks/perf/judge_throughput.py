"""Judge throughput against a loopback OpenAI-compatible server with a fixed latency (not a test: prints figures).

The server answers every chat-completions request after ``--latency`` seconds with a score derived from the
request (so the same item always gets the same score). A sequential client, one request at a time as the paper's
and VoiceBench's judge scripts do, is compared with wavalign's judge at ``--concurrency`` (cache disabled).

    python benchmarks/perf/judge_throughput.py [--items 64] [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _answer(body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    return f"Reasonable answer.\n<score>{1 + digest[0] % 5}</score>"


def serve(latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency)
            payload = json.dumps({
                "id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": _answer(body)}}],
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def sequential(url: str, messages_per_item: list[list[dict]], model: str) -> list[int]:
    """One blocking request per item, in order: the way the paper's and VoiceBench's clients work."""
    from rewards.rubrics import parse_scale

    scores = []
    for messages in messages_per_item:
        request = urllib.request.Request(
            f"{url}/chat/completions", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": model, "messages": messages, "temperature": 0.0, "max_tokens": 512}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = json.loads(response.read())["choices"][0]["message"]["content"]
        scores.append(parse_scale(text, 1, 5)[0])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from rewards.base import Sample
    from rewards.judge import JudgeScorer

    server = serve(args.latency)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    samples = [Sample(id=f"q{i}", prompt=f"Question number {i}: what is {i} plus {i}?", text=f"It is {2 * i}.")
               for i in range(args.items)]
    judge = JudgeScorer(model="bench", base_url=url, rubric="open", cache_dir=None, concurrency=args.concurrency)
    judge.prepare()
    messages = [judge._plan(i, s)[0].messages for i, s in enumerate(samples)]  # the exact requests ours sends

    started = time.perf_counter()
    baseline = sequential(url, messages, "bench")
    t_seq = time.perf_counter() - started
    started = time.perf_counter()
    ours = [s.metrics.get("score") for s in judge.score(samples)]
    t_ours = time.perf_counter() - started
    server.shutdown()

    print(f"{args.items} items, {args.latency * 1000:.0f} ms per request on loopback")
    print(f"sequential client      {t_seq:6.2f} s  {args.items / t_seq:6.1f} items/s")
    print(f"wavalign judge (c={args.concurrency})  {t_ours:6.2f} s  {args.items / t_ours:6.1f} items/s  "
          f"{t_seq / t_ours:.1f}x")
    print(f"identical scores: {sum(a == b for a, b in zip(baseline, ours))}/{args.items}")


if __name__ == "__main__":
    main()
