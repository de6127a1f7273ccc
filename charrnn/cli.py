"""The `charrnn` command: parses options and calls the library; it holds no logic of its own.

Each command imports the library modules it calls inside itself, not here: they load torch, and
`charrnn --help` (or `corpus list`) should start at once. What is imported here loads neither torch
nor numpy (tests/test_hostile.py checks it)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from .corpora import corpus_status, load_catalog
from .errors import CharrnnError, Interrupted, one_line, printable
from .extras import EXTRAS, install_hint
from .families import families, kinds
from .fileio import path_text, shown
from .units import MAX_SEED, check_duration, parse_count, parse_duration


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        try:
            if isinstance(value, (int, float)):
                return check_duration(float(value))
            return parse_duration(value)
        except CharrnnError as e:
            self.fail(str(e), param, ctx)


class ModelKind(click.ParamType):
    """A --model value: any kind a registered family builds (plug-ins included), looked up when used."""

    name = "model"

    def convert(self, value, param, ctx):
        if value not in kinds():
            self.fail(f"{value!r} is not one of {', '.join(kinds())}.", param, ctx)
        return value


class FiniteFloat(click.FloatRange):
    """A float range that also refuses NaN and infinity (which pass every range comparison, or most)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class TrainCommand(click.Command):
    """`charrnn train`, whose flags include every option a family declares (`Family.options`), plug-ins'
    included: read when the command runs, so that `charrnn --help` loads no family (nor torch)."""

    def get_params(self, ctx):
        declared: dict[str, tuple] = {}  # option name -> (declaration, the kinds that read it)
        for fam in families():
            for o in fam.options:
                declared.setdefault(o.name, (o, []))[1].extend(fam.kinds)
        params = super().get_params(ctx)
        at = next(i for i, p in enumerate(params) if p.name == "dropout")  # among the model's flags
        own = [click.Option([o.flag, o.name], type=_option_type(o), help=f"{o.help} ({', '.join(readers)}).")
               for o, readers in declared.values()]
        return params[:at] + own + params[at:]


def _option_type(o) -> click.ParamType:
    bounds = dict(min=o.min, max=o.max, min_open=o.min_open, max_open=o.max_open)
    return click.IntRange(**bounds) if o.type is int else FiniteFloat(**bounds)


class CharrnnGroup(click.Group):
    """Every error is one line on stderr and a non-zero exit: 2 for bad input, never a traceback."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:  # a bare `charrnn` asks for its help
            click.echo(e.ctx.get_help())
            rv = 0
        except Interrupted as e:
            click.echo(printable(str(e)), err=True)
            sys.exit(e.exit_code)
        except CharrnnError as e:
            click.echo(f"Error: {printable(str(e))}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:  # (its messages hold what the user typed)
            click.echo(f"Error: {printable(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except OSError as e:  # a file we could not read or write that no check above named
            where = f": {shown(str(e.filename))}" if e.filename else ""
            click.echo(f"Error: {e.strerror or one_line(e)}{where}", err=True)
            sys.exit(2)
        except (MemoryError, RuntimeError) as e:  # the allocator's verdict, where our estimate let a size through
            if not isinstance(e, MemoryError) and not any(s in str(e) for s in OUT_OF_MEMORY):
                raise
            click.echo(f"Error: out of memory ({one_line(e, 120) or 'MemoryError'}): use smaller sizes", err=True)
            sys.exit(2)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "DefaultCPUAllocator")
POSITIVE_INT = click.IntRange(min=1)
SEED = click.IntRange(0, MAX_SEED)
SAMPLE_TEMPERATURE = 0.8  # `charrnn sample` without --temperature: what the demo shows (the API keeps 1, the model's own)


@click.group(cls=CharrnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="charrnn")
def cli():
    """Character-level language models: train a stacked LSTM/GRU/RNN, a minGRU/minLSTM or a Transformer on any text and sample from it."""


@cli.command(cls=TrainCommand)
@click.argument("corpus", required=False)
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Repeat a run: its settings (and its corpus, when CORPUS is not given) from its config.json; options given here win.")
@click.option("--model", type=ModelKind(), help="Kind of model: lstm, gru, rnn, mingru, minlstm, transformer, or a plug-in's (`charrnn models` describes each).  [default: lstm]")
@click.option("--layers", "n_layers", type=POSITIVE_INT, help="Number of stacked recurrent layers (Transformer: blocks).")
@click.option("--hidden", type=POSITIVE_INT, help="Hidden units per layer (Transformer: its width).")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), help="Dropout between layers and before the output.")
@click.option("--batch-size", type=POSITIVE_INT, help="Parallel text streams per batch.")
@click.option("--seq-len", type=POSITIVE_INT, help="Characters per truncated-BPTT chunk (RNNs).")
@click.option("--grad-accum", type=POSITIVE_INT, help="Split each batch into this many micro-batches, gradients accumulated: the same step in less memory.  [default: 1]")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), help="Peak learning rate (AdamW).")
@click.option("--warmup", "warmup_steps", type=click.IntRange(min=0), help="Linear warmup steps.")
@click.option("--weight-decay", type=FiniteFloat(min=0), help="AdamW weight decay on weight matrices.")
@click.option("--grad-clip", type=FiniteFloat(min=0), help="Gradient-norm clip (0: off).")
@click.option("--max-steps", type=POSITIVE_INT, help="Stop after this many optimizer steps.")
@click.option("--max-epochs", type=FiniteFloat(min=0, min_open=True), help="Stop after this many passes over the text.")
@click.option("--max-time", type=DurationType(), help="Stop after this much training time, e.g. 90s, 10m, 1h. [default: 10m when no stop is given]")
@click.option("--eval-interval", type=click.IntRange(min=0), help="Steps between validation passes (0: automatic).")
@click.option("--val-frac", type=FiniteFloat(0, 1, min_open=True, max_open=True), help="Fraction of the text, at its end, held out for validation.  [default: 0.1; on --resume: the run's]")
@click.option("--seed", type=SEED, help="Random seed for initialisation, dropout and data order.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="auto: bf16 where the CPU or GPU supports it, fp16 on older GPUs, else fp32.  [default: auto; on --resume: the run's]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where to train.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Run folder.  [default: checkpoints/<corpus>-<model>]")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its last.pt.")
@click.option("--init-from", type=click.Path(path_type=Path), help="Fine-tune: start from this run's weights (its model; the vocabulary grown by CORPUS's new characters) with a fresh optimizer.")
@click.option("--byte-fallback/--no-byte-fallback", default=None, help="Add byte tokens so any text, even unseen characters, can be read.  [default: on; on --resume: the run's]")
@click.option("--sample-length", "sample_len", type=click.IntRange(0, 100_000), default=200, show_default=True, help="Characters of sample shown at each validation (as `sample --length`).")
@click.option("--sample-len", "sample_len_old", type=click.IntRange(0, 100_000), hidden=True)  # its old name, for a release
@click.option("--dist-timeout", type=DurationType(), default="10m", show_default=True, help="Under torchrun: how long a process waits for the others before the job fails.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model for training (needs a C++ compiler on CPU; compile time counts).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, samples or notices.")
def train(corpus, config_path, out, resume, init_from, val_frac, precision, device, byte_fallback, sample_len, sample_len_old, dist_timeout,
          compile_, quiet, **settings):
    """Train a model on CORPUS: a UTF-8 text file or a catalog name (see `charrnn corpus list`).

    Settings left unset are chosen from the time budget (docs/training.md): `charrnn train tinyshakespeare
    --max-time 60s` picks a model that learns fast, `--max-time 15m` a larger, regularised one.

    Launched by torchrun (`torchrun --nproc_per_node=N -m charrnn train ...`) it trains data-parallel:
    --batch-size is the global batch, split evenly over the processes.
    """
    started = time.perf_counter()  # --max-time counts from here: importing torch is part of the command
    from .training import RunOptions, settings_of
    from .training import train as train_pipeline

    overrides = {k: v for k, v in settings.items() if v is not None}
    if config_path is not None:
        recorded, settings_, options = settings_of(config_path)
        corpus = corpus or recorded
        overrides = {**settings_, **overrides}
        val_frac = options["val_frac"] if val_frac is None else val_frac
        precision = options["precision"] if precision is None else precision
    if corpus is None:
        raise CharrnnError("name a CORPUS (a text file or a catalog name), or give --config RUN/config.json")
    opts = RunOptions(corpus=corpus, out=out, val_frac=val_frac, byte_fallback=byte_fallback, device=device,
                      precision=precision, resume=resume, quiet=quiet,
                      sample_len=sample_len if sample_len_old is None else sample_len_old, init_from=init_from,
                      dist_timeout=dist_timeout, compile=compile_, started=started)
    summary = train_pipeline(opts, overrides)
    if not summary["main"]:  # under torchrun rank 0 speaks for the job
        return 130 if summary["reason"] == "interrupted" else 0
    if summary["reason"] == "interrupted":
        click.echo(f"interrupted at step {summary['step']}: saved {shown(Path(summary['run_dir']) / 'last.pt')} "
                   f"(continue with --resume)", err=True)
        return 130
    if not quiet:
        best, skipped = summary["best_val"], summary["skipped"]
        click.echo(f"done: {summary['step']} steps in {summary['elapsed']:.0f}s"
                   + (f", best val loss {best:.4f}" if best is not None else "")
                   + (f", {skipped} update(s) skipped for a non-finite loss or gradient" if skipped else "")
                   + f" -> {shown(summary['run_dir'])}", err=True)
    return 0


@cli.command()
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--prime", help="Text to start from; it is printed first.")
@click.option("--prime-file", help="Read the prime from this UTF-8 file ('-': standard input).")
@click.option("--length", type=click.IntRange(min=0), default=500, show_default=True, help="Characters to generate; 0: no end, streamed until Ctrl-C or a closed pipe. With --items: the longest item.")
@click.option("--temperature", "-t", type=FiniteFloat(min=0), help=f"Sampling temperature: 1 is the model's own distribution, lower is more conservative, 0 is greedy.  [default: {SAMPLE_TEMPERATURE}]")
@click.option("--top-k", type=POSITIVE_INT, help="Sample only from the k most likely characters.")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), help="Sample only from the smallest set of characters whose probability reaches p.")
@click.option("--min-p", type=FiniteFloat(0, 1), help="Sample only from the characters at least p times as likely as the most likely one.")
@click.option("--seed", type=SEED, help="Random seed: the same seed gives the same text.")
@click.option("--num-samples", "-n", type=POSITIVE_INT, default=1, show_default=True, help="Samples to generate, as one batch.")
@click.option("--stop", multiple=True, help="End a sample at the first occurrence of this string (not printed). Repeatable.")
@click.option("--stream/--no-stream", default=None, help="Print characters as they are made.  [default: on a terminal]")
@click.option("--beam", type=POSITIVE_INT, help="Print the K most likely continuations (beam search: deterministic, the model's own probabilities, so no --temperature, --top-k, --top-p or --min-p). With --items N: the N most likely items a beam of K >= N finds.")
@click.option("--items", type=POSITIVE_INT, help="Print N items: complete lines the model makes, one per line.")
@click.option("--new", is_flag=True, help="With --items: only items in neither split of the run's corpus, each once.")
@click.option("--label", is_flag=True, help="With --items: say before each whether it is in the corpus's train or validation split, or new.")
@click.option("--json", "as_json", is_flag=True, help="With --items: one JSON object per item: text, label, logprob and logprob_per_char (nats).")
@click.option("--max-attempts", type=POSITIVE_INT, help="With --items: the most lines to draw.  [default: 20 per item, at least 1,000]")
@click.option("--unknown", type=click.Choice(["error", "bytes"]), default="error", show_default=True, help="Prime characters outside the vocabulary: fail naming them, or read them as UTF-8 bytes.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "mps"]), default="cpu", show_default=True, help="Where to sample.")
@click.option("--weights", type=click.Choice(["auto", "fp32", "int8"]), default="auto", show_default=True, help="How the RNN step holds its weights: int8 (x86 CPU) is faster for one stream and approximate; fp32 is exact. auto: int8 where it runs.")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True, help="What runs the step: torch, or ONNX Runtime on the exported step (CPU; the export extra).")
def sample(run, prime, prime_file, length, temperature, top_k, top_p, min_p, seed, num_samples, stop, stream, beam,
           items, new, label, as_json, max_attempts, unknown, device, weights, engine):
    """Generate text from RUN: a run folder (best.pt, else last.pt), a checkpoint file, or a model folder
    `charrnn export --format hf` wrote.

    Without RUN, the newest run under ./checkpoints is used.
    """
    conflict = _sample_conflict(prime, prime_file, length, temperature, top_k, top_p, min_p, num_samples, stop,
                                stream, beam, items, new, label, as_json, max_attempts)
    if conflict:
        raise CharrnnError(conflict)
    from .checkpoint import newest_run
    from .device import resolve_device
    from .sampler import SampleConfig, Sampler, read_prime_file

    if prime_file is not None:
        prime = read_prime_file(prime_file)
    if temperature is None:  # (a beam search takes the model's own distribution)
        temperature = 1.0 if beam is not None else SAMPLE_TEMPERATURE
    sampler = Sampler.load(run if run is not None else newest_run(), device=str(resolve_device(device)), weights=weights,
                           engine=engine)
    cfg = SampleConfig(length=length or None, temperature=temperature, top_k=top_k, top_p=top_p, prime=prime or "",
                       seed=seed, stop=tuple(stop), unknown=unknown, min_p=min_p)
    if stream is None:
        stream = sys.stdout.isatty() and num_samples == 1
    rv = 0
    try:
        if items is not None:
            rv = _print_items(sampler, cfg, items, new, label, as_json, max_attempts, beam)
        elif beam is not None:
            for i, b in enumerate(sampler.beam(beam, prime=cfg.prime, length=length, stop=cfg.stop, unknown=unknown)):
                if beam > 1:
                    click.echo(f"--- beam {i + 1}: log-probability {b.logprob:.4f} ({b.logprob_per_char:.4f} per "
                               f"character) ---")
                click.echo(b.text)
        elif (stream and num_samples == 1) or cfg.length is None:  # (no end: always streamed)
            for piece in sampler.stream(**vars(cfg)):
                click.echo(piece, nl=False)
                sys.stdout.flush()
            click.echo()
        else:
            for i, text in enumerate(sampler.sample_many(cfg, num_samples)):
                if num_samples > 1:
                    click.echo(f"--- sample {i + 1} ---")
                click.echo(text)
        sys.stdout.flush()  # (a reader that has gone is found here, not at exit)
    except BrokenPipeError:
        _reader_gone()
        return 0
    return rv


def _print_items(sampler, cfg, n, new, label, as_json, max_attempts, beam) -> int:
    """`sample --items`: each item as it is found; 1 when fewer than n were (said on stderr)."""
    from .sampler import default_attempts

    settings = {k: v for k, v in vars(cfg).items() if k != "stop"}
    found = 0
    for item in sampler.iter_items(n, new=new, label=label or as_json, max_attempts=max_attempts, beam=beam,
                                   **settings):
        found += 1
        click.echo(json.dumps(item.to_dict(), ensure_ascii=False) if as_json
                   else f"{item.label:<10} {item.text}" if label else item.text)
    if found == n:
        return 0
    limit = (f"a beam of {beam} within --length {cfg.length}" if beam is not None
             else f"{max_attempts or default_attempts(n):,} lines drawn (--max-attempts)")
    click.echo(f"found {found:,} of {n:,} {'new ' if new else ''}items in {limit}", err=True)
    return 1


def _sample_conflict(prime, prime_file, length, temperature, top_k, top_p, min_p, num_samples, stop, stream, beam,
                     items, new, label, as_json, max_attempts) -> str | None:
    """Why `charrnn sample`'s options do not go together, or None."""
    if prime is not None and prime_file is not None:
        return "give --prime or --prime-file, not both"
    if items is None:
        needs = [flag for flag, given in (("--new", new), ("--label", label), ("--json", as_json),
                                          ("--max-attempts", max_attempts is not None)) if given]
        if needs:
            return f"{', '.join(needs)} applies to --items"
    else:
        if num_samples != 1:
            return "--items N prints N items: drop --num-samples"
        if stop:
            return "an item ends at its newline: --stop does not apply to --items"
        if length == 0:
            return "with --items, --length is the longest item: give one (0, no end, is for text)"
    if beam is not None:
        filters = [flag for flag, given in (("--temperature", temperature not in (None, 1.0)), ("--top-k", top_k is not None),
                                            ("--top-p", top_p is not None), ("--min-p", min_p is not None)) if given]
        if filters:
            return f"--beam searches the model's own probabilities: it takes no {', '.join(filters)}"
        if items is not None and beam < items:
            return f"a beam of {beam} finds at most {beam} items: give --beam {items} or more for --items {items}"
        if max_attempts is not None:
            return "--max-attempts limits sampling; a beam search ends within --length"
        if items is None and num_samples != 1:
            return "--beam K prints K continuations: drop --num-samples"
        if length == 0:
            return "--beam needs an end: --length 0 (no end) is for sampling"
    if length == 0 and items is None and beam is None:
        if num_samples != 1:
            return "--length 0 (no end) streams one sample: drop --num-samples"
        if stream is False:
            return "--length 0 (no end) is always streamed: drop --no-stream"
    return None


def _reader_gone() -> None:
    """Standard output's reader has closed it (`charrnn sample ... | head`): not an error, the end. Point
    stdout at /dev/null, so that Python's flush at exit has no pipe to fail on (and prints no "Exception
    ignored ... BrokenPipeError"), as Python's signal module documentation advises."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # (a stdout without a descriptor: nothing is flushed to a pipe at exit)
        pass


@cli.command(name="serve")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; another than this machine's own (loopback) should come with --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on (0: any free one; the address is printed).")
@click.option("--api-key", envvar="CHARRNN_API_KEY", help="Require `Authorization: Bearer KEY` on the API (/v1/*).  [env: CHARRNN_API_KEY]")
@click.option("--max-streams", type=click.IntRange(1, 4096), default=256, show_default=True, help="Streams the worker steps at once (a request's n choices are n streams).")
@click.option("--max-queue", type=click.IntRange(min=0), default=64, show_default=True, help="Requests that may wait for room; beyond them the answer is 503 with Retry-After.")
@click.option("--batching/--no-batching", default=True, show_default=True, help="One batched step for every stream, or one request at a time (to compare).")
@click.option("--idle-timeout", type=FiniteFloat(0.1, 3600), default=5.0, show_default=True, help="Seconds a connection may stay open without a request, or a request's body take to arrive.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "mps"]), default="cpu", show_default=True, help="Where to run the model.")
@click.option("--weights", type=click.Choice(["auto", "fp32", "int8"]), default="fp32", show_default=True, help="How the RNN step holds its weights. fp32: each stream's text is what `charrnn sample` gives, whoever shares the step; int8 (x86 CPU) shares one activation scale across the batch, so a stream's text depends on the others.")
def serve_cmd(run, host, port, api_key, max_streams, max_queue, batching, idle_timeout, device, weights):
    """Serve RUN over HTTP: an OpenAI-compatible completions API (/v1/completions, /v1/models), a page to
    write with the model (/) and /health. Every stream advances in one batched step.

    Without RUN, the newest run under ./checkpoints is served. Stop with Ctrl-C or SIGTERM.
    """
    from .checkpoint import newest_run
    from .device import resolve_device

    try:
        from .serve import ServeConfig, serve
    except ImportError as e:  # the serve extra's libraries, which serve.py imports
        library = (e.name or "").split(".")[0]
        if EXTRAS.get(library) != "serve":
            raise
        raise CharrnnError(f"charrnn serve needs the serve extra ({library} is not installed): "
                           f"{install_hint(library)}") from None
    config = ServeConfig(host=host, port=port, api_key=api_key or None, max_streams=max_streams, max_queue=max_queue,
                         batching=batching, idle_timeout=idle_timeout)
    serve(run if run is not None else newest_run(), config, device=str(resolve_device(device)), weights=weights)


@cli.command(name="export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "hf", "html"]), required=True, help="onnx: the one-character step as an ONNX graph (ONNX Runtime runs it); hf: a Hugging Face-style folder (safetensors, config, tokenizer, model card); html: one page that samples in the browser, offline.")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="The file (onnx, html) or folder (hf) to write.")
@click.option("--weights", type=click.Choice(["fp32", "fp16", "int8"]), help="onnx: fp32, or int8 (ONNX Runtime's dynamic quantisation); html: int8 (smallest), fp16 or fp32 (exact).  [default: onnx fp32, html int8]")
def export_cmd(run, fmt, out, weights):
    """Export RUN (a run folder or a checkpoint file) to use it without charrnn: an ONNX graph, a model
    folder for the Hugging Face Hub, or a web page. Needs the export extra: pip install 'charrnn-toolkit[export]'."""
    from .export.run import export_run

    result = export_run(run, fmt, out, weights)
    click.echo(f"{result['out']}: {result['format']} ({result['weights']} weights), {result['bytes']:,} bytes", err=True)


@cli.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path), required=False)
@click.argument("corpus", required=False)
@click.option("--split", "split_name", type=click.Choice(["val", "all"]), default="val", show_default=True, help="The validation split (the run's --val-frac) or the whole file.")
@click.option("--val-frac", type=FiniteFloat(0, 1, min_open=True, max_open=True), help="Override the run's validation fraction.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: loss_nats, bpc, perplexity, chars.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where to evaluate.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="fp32", show_default=True, help="Arithmetic precision.")
@click.option("--stride", type=POSITIVE_INT, help="Transformer only: characters each evaluation window moves on; smaller gives predictions more context, slower.  [default: context/2]")
def eval_cmd(run, corpus, split_name, val_frac, as_json, device, precision, stride):
    """Score RUN on CORPUS: loss per character in nats and bits, and perplexity.

    Without RUN, the newest run under ./checkpoints; without CORPUS, the run's own (the file it trained on,
    or the catalog corpus with its text)."""
    from .analysis import eval_run

    result = eval_run(run, corpus, split_name=split_name, val_frac=val_frac, device=device, precision=precision,
                      stride=stride)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(f"loss       {result.loss_nats:.4f} nats/char\nbpc        {result.bpc:.4f}\n"
                   f"perplexity {result.perplexity:.4f}\nchars      {result.chars:,}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", is_flag=True, help="Also draw its training and validation loss: loss.html beside the checkpoint.")
def info(run, as_json, plot):
    """Show RUN's configuration, parameter count, steps and best validation loss (without RUN: the newest
    run under ./checkpoints)."""
    from .analysis import describe_run, plot_losses, run_info

    data = run_info(run)
    if plot:
        data["plot"] = path_text(plot_losses(run))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in describe_run(data):
        click.echo(line)
    if plot:
        click.echo(f"{'loss page':<13} {shown(data['plot'])}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path), required=False)
@click.argument("corpus", required=False)
@click.option("--text", help="Inspect this text itself instead of a corpus.")
@click.option("--chars", type=click.IntRange(2, 5_000_000), default=20_000, show_default=True, help="Characters to analyse (from the start of the validation split, the corpus or the text).")
@click.option("--show", type=click.IntRange(1, 5_000), default=1_000, show_default=True, help="Characters the page shows coloured (every unit's activation on each is stored in the page).")
@click.option("--positions", type=click.IntRange(1, 1024), default=32, show_default=True, help="Positions averaged for the gradients through time.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Where to write the page.  [default: inspect.html in the run folder]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Which positions the gradients through time are measured at.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where to run the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def inspect(run, corpus, text, chars, show, positions, out, seed, device, as_json, quiet):
    """Show what RUN's hidden state remembers, as one HTML page: units coloured over the text with the
    text features they track, the loss on each character, gate saturation and gradients through time.

    RUN: a run folder or checkpoint [default: the newest run under ./checkpoints]. CORPUS: a file or
    catalog corpus (the run's own: its validation split) [default: the run's own]; or --text."""
    from .analysis import describe_inspection, inspect_run

    if text is not None and corpus is not None:
        raise CharrnnError("give a CORPUS or --text, not both")
    result = inspect_run(run, corpus, chars=chars, show=show, out=out, positions=positions, seed=seed, device=device,
                         quiet=quiet, command=" ".join(["charrnn", "inspect", *sys.argv[2:]]), text=text)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"loss       {result['loss_nats']:.4f} nats/char over {result['chars']:,} characters of {result['source']}")
    for line in describe_inspection(result):
        click.echo(line)
    click.echo(f"page       {shown(result['page'])}")


@cli.command(name="compare")
@click.argument("corpus")
@click.option("--models", help="Comma-separated models to train, one after another.  [default: every kind, as `charrnn models` lists them]")
@click.option("--max-time", type=DurationType(), default="5m", show_default=True, help="Training time for each model, validation included, e.g. 90s, 5m.")
@click.option("--params", help="Size every model to about this many parameters, e.g. 800k or 3M.  [default: each model's budget preset]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Report folder; the runs go in its runs/.  [default: reports/<corpus>]")
@click.option("--seed", type=SEED, default=1337, show_default=True, help="Random seed for every model.")
@click.option("--val-frac", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.1, show_default=True, help="Fraction of the text, at its end, held out for validation.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True, help="Training precision (measurements after training run in fp32).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="Where to train and measure.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notices; only the table.")
def compare_cmd(corpus, models, max_time, params, out, seed, val_frac, precision, device, quiet):
    """Train MODELS on CORPUS under the same time budget and compare them: a table (printed, and saved
    with charts, probes and samples as report.md and report.html in --out)."""
    from .compare import CompareConfig, compare
    from .report import terminal_table

    if models is None:
        models = ",".join(kinds())
    cfg = CompareConfig(corpus=corpus, models=tuple(m.strip() for m in models.split(",") if m.strip()),
                        max_time=max_time, params=parse_count(params) if params else None, out=out, seed=seed,
                        val_frac=val_frac, precision=precision, device=device, quiet=quiet)
    report = compare(cfg)
    click.echo(terminal_table(report))
    if not quiet:
        click.echo(f"report: {shown(Path(report['out']) / 'report.md')} and report.html", err=True)


@cli.command(name="models")
def models_cmd():
    """List the kinds of model --model takes, family by family (plug-ins included)."""
    for fam in families():
        presets = ", ".join(p.name for p in fam.presets)
        click.echo(f"{', '.join(fam.kinds)}\n  {fam.summary}\n  presets {presets}: {fam.presets_note}")


@cli.group()
def corpus():
    """Named corpora."""


@corpus.command(name="list")
def corpus_list():
    """Show the catalog of named corpora and where each would be read from."""
    for name, entry in sorted(load_catalog().items()):
        click.echo(f"{name:<18} {entry['bytes']:>12,} bytes  {corpus_status(name)}\n{'':<18} {entry['description']}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
