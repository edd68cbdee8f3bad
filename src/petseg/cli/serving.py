"""`petseg serve` and `petseg predict`: the local TF-Serving-compatible server and its client (petseg.serving)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    _add_serve(sub)
    _add_predict(sub)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="local server speaking TF Serving's gRPC and REST APIs (development and CI; production: serving/deploy)",
    )
    p.add_argument("--port", type=int, default=None, help="gRPC port (default: serve.grpc_port; 0 = a free one)")
    p.add_argument(
        "--rest-port",
        type=int,
        default=None,
        help="REST port, TF Serving's /v1/models API (default: serve.rest_port; 0 = a free one)",
    )
    p.add_argument("--host", default=None, help="address to listen on (default: serve.host)")
    p.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        help="folder holding <model-name>/<version>/ and models.config (default: push.model_base_path)",
    )
    p.add_argument("--model-name", default=None, help="model to serve (default: push.model_name)")
    p.add_argument(
        "--batching-parameters-file",
        default=None,
        metavar="FILE",
        help="TF Serving batching parameters whose max_batch_size bounds one request "
        '(default: serve.batching_parameters_file; "" = no bound)',
    )
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace, params: Params) -> None:
    import dataclasses

    from petseg.components.core.params import check_model_name
    from petseg.serving.server import serve

    if args.model_name is not None:
        check_model_name(args.model_name, "--model-name")
    serve_params = params.serve
    if args.batching_parameters_file is not None:
        serve_params = dataclasses.replace(serve_params, batching_parameters_file=args.batching_parameters_file)
    for flag, value in (("--port", args.port), ("--rest-port", args.rest_port)):
        if value is not None and not 0 <= value <= 65535:
            raise PetsegError(f"{flag} {value} is not a port; give 0 (a free one) to 65535")
    serve(
        args.model_base_path or Path(params.push.model_base_path),
        args.model_name or params.push.model_name,
        serve_params,
        host=args.host,
        port=args.port,
        rest_port=args.rest_port,
        log=lambda line: print(line, flush=True),
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images on a model server; write mask and overlay PNGs")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG/PNG photos of any size")
    p.add_argument("--target", default=None, help="gRPC server HOST:PORT (default: localhost:serve.grpc_port)")
    p.add_argument(
        "--rest",
        default=None,
        metavar="HOST:PORT",
        help="ask a REST endpoint (TF Serving's :8501, or petseg serve --rest-port) instead of gRPC, "
        "through the serving_png signature: JPEG/PNG bytes in, PNG masks back",
    )
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--model-name", default=None, help="model to ask (default: push.model_name)")
    p.add_argument(
        "--bytes", action="store_true", help="send the files' encoded bytes (serving_bytes signature) instead of pixels"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default: 30)")
    p.add_argument(
        "--sheet", type=Path, default=None, help="also write one PNG with a row per image: photo, mask, overlay"
    )
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, params: Params) -> None:
    from petseg.serving.predict_files import format_result, predict_files

    if args.rest is not None and args.target is not None:
        raise PetsegError("--rest and --target name two servers; give --rest HOST:PORT for REST or --target for gRPC")
    results = predict_files(
        args.rest or args.target or f"localhost:{params.serve.grpc_port}",
        args.images,
        args.out,
        model_name=args.model_name or params.push.model_name,
        max_message_mb=params.serve.max_message_mb,
        encoded=args.bytes,
        timeout_seconds=args.timeout,
        sheet=args.sheet,
        rest=args.rest is not None,
    )
    for result in results:
        print(format_result(result))
