"""Time ``cnnlab serve``'s round trip for LeNet-5, the bar issue 16 sets (under 100 ms on a
2-core laptop), and its latency with 8 clients drawing at once.

A round trip is what the page does while you draw: ``POST /api/forward`` with a 1x28x28
input as JSON over a kept-alive HTTP connection to 127.0.0.1, the server running the
model, recording every layer and encoding every map, and the client parsing the answer.

- one client: ``--requests`` round trips one after the other (median, p95, max);
- eight clients: 8 threads, each ``--requests`` round trips with its own connection, all
  started together (p95 and max over every request, and requests per second).

The server runs in this process on a free port, as the tests start it.

    python benchmarks/bench_serve.py [--requests N] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _timing import machine_info

from cnnlab.data import load_dataset
from cnnlab.explorer import Explorer, make_server
from cnnlab.models import build_model
from cnnlab.sources import LoadedModel


def _client(port: int, inputs: list[bytes], latencies: list[float], errors: list[str]
            ) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    for body in inputs:
        started = time.perf_counter()
        connection.request("POST", "/api/forward", body, headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        latencies.append(time.perf_counter() - started)
        if response.status != 200 or "probabilities" not in answer:
            errors.append(f"{response.status}: {answer.get('error')}")
    connection.close()


def run(requests: int) -> dict[str, Any]:
    _, test = load_dataset("mnist5k")
    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    loaded = LoadedModel(model, "lenet5", (1, 28, 28), "mnist5k", test.x, test.y)
    server = make_server(Explorer(loaded), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    bodies = [json.dumps({"input": test.x[i % len(test.x)].tolist()}).encode()
              for i in range(requests)]
    try:
        _client(port, bodies[:10], [], [])  # warm up
        single: list[float] = []
        errors: list[str] = []
        _client(port, bodies, single, errors)
        many: list[float] = []
        threads = [threading.Thread(target=_client, args=(port, bodies, many, errors))
                   for _ in range(8)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()

    def ms(values: list[float], q: float) -> float:
        return round(1000 * float(np.quantile(values, q)), 2)

    return {"machine": machine_info(), "requests_per_client": requests,
            "answer_bytes": len(json.dumps(Explorer(loaded).forward(
                {"input": test.x[0].tolist()}))),
            "one_client_ms": {"median": ms(single, 0.5), "p95": ms(single, 0.95),
                              "max": ms(single, 1.0)},
            "eight_clients_ms": {"median": ms(many, 0.5), "p95": ms(many, 0.95),
                                 "max": ms(many, 1.0)},
            "eight_clients_requests_per_second": round(len(many) / elapsed, 1),
            "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200,
                        help="round trips per client (default 200)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = run(args.requests)
    one, eight = result["one_client_ms"], result["eight_clients_ms"]
    print(f"LeNet-5 forward round trip, one client: median {one['median']} ms, "
          f"p95 {one['p95']} ms, max {one['max']} ms (bar: 100 ms)")
    print(f"8 clients at once: median {eight['median']} ms, p95 {eight['p95']} ms, "
          f"max {eight['max']} ms, {result['eight_clients_requests_per_second']} "
          f"requests/s, {len(result['errors'])} errors")
    print(f"answer size {result['answer_bytes']:,} bytes")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
