"""Markdown tables of benchmark / FLOPs JSON files, and the check that the docs quote them.

Examples::

    # print a table (the text of a <!-- table: ... --> mark)
    python tools/analysis_tools/benchmark_table.py speed cols=model,batch,dense,dynamic,speedup \
        'cpu_224.json[batch=8,32]'
    # regenerate every marked table of these files from docs/benchmarks/*.json
    python tools/analysis_tools/benchmark_table.py --update README.md docs/*.md
    # check every marked table and paragraph (exit status 1 on a mismatch)
    python tools/analysis_tools/benchmark_table.py --check README.md docs/*.md

The marks and the rules are described in ``mmdvit/analysis/doc_numbers.py`` and in
docs/efficiency.md.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from mmdvit.analysis.doc_numbers import iter_problems, render_table, update_text
from mmdvit.engine.cli import add_debug_argument, run_tool

BENCH_DIR = Path(__file__).resolve().parents[2] / 'docs' / 'benchmarks'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print a Markdown table of benchmark / FLOPs JSON files, or regenerate '
        '(--update) or check (--check) the marked tables and paragraphs of Markdown files.')
    parser.add_argument('spec', nargs='*', help='a table mark: KIND [cols=...] [prec=N] '
                        'FILE.json[conditions][@label] ...')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--update', nargs='+', metavar='MD', help='regenerate the tables of '
                      'these Markdown files in place')
    mode.add_argument('--check', nargs='+', metavar='MD', help='check these Markdown files')
    parser.add_argument('--bench-dir', type=Path, default=BENCH_DIR,
                        help='folder of the JSON files (default docs/benchmarks)')
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.spec) == bool(args.update or args.check):
        parser.error('give either a table mark or --update / --check with Markdown files')
    return args


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file in the same folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(tmp, path.stat().st_mode)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.spec:
        print(render_table(args.bench_dir, ' '.join(args.spec)), end='')
        return 0
    if args.update:
        for md in map(Path, args.update):
            text = md.read_text()
            new = update_text(text, args.bench_dir)
            if new != text:
                write_atomic(md, new)
                print(f'updated {md}')
        return 0
    problems = [p for md in map(Path, args.check) for p in iter_problems(md, args.bench_dir)]
    for problem in problems:
        print(problem)
    print(f'{len(problems)} mismatch(es) in {len(args.check)} file(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    run_tool(lambda: sys.exit(main()))
