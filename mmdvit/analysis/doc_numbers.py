"""Benchmark and FLOPs numbers in the documentation, generated from and checked against the JSON
files under ``docs/benchmarks/`` (written by ``benchmark.py`` and ``get_flops.py``).

Two marks in a Markdown file tie its numbers to those files (HTML comments: invisible when the
page is rendered):

- A generated table::

      <!-- table: speed prec=3 cols=model,part,dtype,batch,dense,speedup cpu_224.json[batch=8] -->
      ... (the machine line and the table, written by ``update_text``, and a blank line) ...
      <!-- end table -->

  ``speed`` tables take the ``rows`` of benchmark JSON files (``cols`` from :data:`SPEED_COLS`,
  ``prec`` decimals for ratios, default 2) and start with a line naming the one machine they
  were measured on; rows of different machines in one table (or one checked paragraph) are
  refused. ``memory`` tables take
  the ``memory`` rows (:data:`MEMORY_COLS`); ``flops`` tables take ``get_flops.py`` files
  (:data:`FLOPS_COLS`, one row per file, labelled with its name without ``flops_``).
- A checked paragraph::

      <!-- numbers: cuda_h200_224.json[batch=64] -->
      A paragraph (up to the next blank line) whose every decimal number ...

  Every number with a decimal point in the paragraph (a table counts as one; code spans and
  thresholds after ``>=`` / ``<=`` excepted) must equal, at the decimals it is printed with, a
  figure of the selected rows (any numeric field, or a derived one: see :func:`row_figures`).

A source is ``FILE.json``, optionally followed by ``[conditions]`` and ``@label``. Conditions
select rows: ``key=v1,v2`` (the row's field, as text, is one of the values; ``input`` is
``HxW``), ``;`` joins conditions that must all hold, ``|`` separates alternatives. The label is
appended to the model name (e.g. ``@token`` for a run with token granularity).
"""
import json
import math
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

TABLE_RE = re.compile(r'<!-- table: (?P<spec>[^\n]*?) -->\n(?P<body>.*?)<!-- end table -->\n',
                      re.S)
NUMBERS_RE = re.compile(r'<!-- numbers: (?P<spec>.*?) -->\n(?P<body>(?:[^\n]+\n)+)')
SOURCE_RE = re.compile(r'^(?P<file>[\w.+-]+\.json)(?:\[(?P<cond>[^\]]*)\])?(?:@(?P<label>\S+))?$')
# a decimal number that is not part of a version, a name or a float in e-notation, nor a
# threshold written after ``>=`` / ``<=`` (targets are not measurements)
DECIMAL_RE = re.compile(r'(?<![\w.])(?<![<>]= )(?<![<>]=)\d+\.\d+(?![\w.]*\d)(?!e[-+]?\d)')

SPEED_COLS = {
    'model': 'model', 'part': 'part', 'dtype': 'dtype', 'batch': 'batch', 'input': 'input',
    'backend': 'backend', 'dense': 'dense', 'twin': 'twin', 'dynamic': 'dynamic',
    'speedup': 'speed-up', 'speedup_cpu': 'speed-up (CPU time)', 'ideal': 'ideal',
    'realis': 'realis.', 'realis_cpu': 'realis. (CPU time)', 'quiet': 'quiet calls'}
MEMORY_COLS = {'model': 'backbone', 'batch': 'batch', 'input': 'input',
               'dense_mib': 'dense MiB', 'dynamic_mib': 'dynamic MiB',
               'ratio': 'dynamic / dense'}
FLOPS_COLS = {'config': 'config', 'input': 'input', 'backbone': 'backbone dense -> dynamic',
              'neck_and_heads': 'neck + heads dense -> dynamic',
              'model': 'whole model dense -> dynamic', 'heads_alone': 'heads alone'}
BACKENDS = {'compile': 'torch.compile'}
DTYPES = {'bfloat16-autocast': 'bf16 autocast', 'float16-autocast': 'fp16 autocast'}


class DocNumbersError(ValueError):
    """A mark in a Markdown file that cannot be read or that names missing data."""


def load_json(bench_dir: Path, name: str) -> dict:
    """The JSON file ``name`` of ``bench_dir``, with a clear error when it is missing."""
    path = bench_dir / name
    if not path.is_file():
        raise DocNumbersError(f'{path} (a benchmark JSON file named in a docs mark) does not '
                              'exist: fix the file name in the mark')
    return json.loads(path.read_text())


def _matches(row: dict, cond: Optional[str]) -> bool:
    """Whether ``row`` satisfies a condition string (``k=v,v;k=v|k=v``)."""
    if not cond:
        return True
    for alternative in cond.split('|'):
        terms = [t for t in alternative.split(';') if t]
        if all(_field_text(row, key) in values.split(',')
               for key, values in (t.split('=', 1) for t in terms)):
            return True
    return False


def _field_text(row: dict, key: str) -> str:
    """A row field as the conditions compare it (``input`` as ``HxW``)."""
    if key == 'input':
        return 'x'.join(str(s) for s in row['shape'])
    return str(row.get(key))


def _module_rows(data: dict) -> List[dict]:
    """``benchmark.py --per-module`` timings as rows: one per module and one per whole forward
    (``module`` = its name), with the model's fields."""
    rows = []
    for model in data.get('modules') or []:
        fields = {k: v for k, v in model.items() if k not in ('units', 'total', 'name')}
        for unit in model['units'] + [model['total']]:
            rows.append(dict(fields, model=model['name'], module=unit['name'], **{
                k: v for k, v in unit.items() if k != 'name'}))
    return rows


def _quality_rows(data: dict) -> List[dict]:
    """A ``quality_benchmark.py`` report as rows: one per trained model (``model`` = teacher,
    dense or the variant) with its mIoU, per-class IoU and group means (``large``, ``thin``,
    ``small``); the variant's row adds its differences to the dense model (``vs_dense.*``,
    unsigned: the docs print the sign) and the FLOPs at the report's size (``flops.*``)."""
    groups = data['settings']['data']['groups']

    def figures(result: dict) -> dict:
        per_class = result['per_class']
        means = {g: sum(per_class[c] for c in names) / len(names) for g, names in groups.items()}
        return dict(mIoU=result['mIoU'], **per_class, **means)

    dense = figures(data['models']['dense'])
    rows = []
    for name, result in data['models'].items():
        row = dict(figures(result), model=name, variant=data['settings']['variant'])
        if name == data['settings']['variant']:
            row.update({f'vs_dense.{k}': abs(v - dense[k]) for k, v in figures(result).items()})
            row.update({f'flops.{k}': v for k, v in data['flops'].items()
                        if isinstance(v, float)})
        rows.append(row)
    return rows


def _file_rows(data: dict, kind: str) -> List[dict]:
    """The rows of one JSON file a mark of ``kind`` reads: a ``get_flops.py`` file is one row, a
    quality report one per model (:func:`_quality_rows`);
    benchmark files give their ``rows`` (``speed``), their ``memory`` rows (``memory``, with
    ``part='memory'``) or all of them with the ``--per-module`` timings (``numbers``)."""
    if 'models' in data and 'settings' in data:
        return _quality_rows(data)
    if 'rows' not in data:
        return [data]
    memory = [dict(r, part='memory') for r in data.get('memory') or []]
    return {'speed': data['rows'], 'memory': memory}.get(
        kind, data['rows'] + memory + _module_rows(data))


def select_rows(bench_dir: Path, spec: Sequence[str], kind: str) -> List[Tuple[dict, dict]]:
    """``(file data, row)`` pairs that the sources in ``spec`` select, in order; each row gets
    ``_label`` (the source's label) and ``_file``."""
    selected = []
    for source in spec:
        match = SOURCE_RE.match(source)
        if not match:
            raise DocNumbersError(f'cannot read the source {source!r} of a docs mark: write '
                                  'FILE.json[key=value;...|...]@label')
        if match['cond'] and any('=' not in t for t in re.split('[;|]', match['cond']) if t):
            raise DocNumbersError(f'cannot read the conditions of {source!r} in a docs mark: '
                                  'write key=value[,value][;key=value][|...]')
        data = load_json(bench_dir, match['file'])
        before = len(selected)
        for row in _file_rows(data, kind):
            if row.get('speedup', 0) is None or not _matches(row, match['cond']):
                continue  # rows that could not run (e.g. no bf16 NMS kernel) have no figures
            selected.append((data, dict(row, _label=match['label'], _file=match['file'])))
        if len(selected) == before:
            raise DocNumbersError(f'the source {source!r} of a docs mark selects no row of '
                                  f"{match['file']}: fix its conditions")
    return selected


def one_machine(rows: List[Tuple[dict, dict]], mark: str) -> None:
    """Refuse benchmark rows of more than one machine in one mark (``get_flops.py`` files,
    which count rather than time, have no machine)."""
    machines = {json.dumps(data['machine'], sort_keys=True) for data, _ in rows
                if 'machine' in data}
    if len(machines) > 1:
        raise DocNumbersError(f'{mark} mixes rows of {len(machines)} machines; rows of '
                              'different machines are not compared: split it')


def machine_line(machine: dict) -> str:
    """One line naming the machine a benchmark file was measured on."""
    threads = f"{machine['torch_threads']} threads, torch {machine['torch']}"
    if machine.get('gpu'):
        return (f"Machine: {machine['gpu']} (host {machine['cpu']}, {machine['cpu_count']} "
                f"cores), {threads}.")
    return f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {threads}, CPU only."


def fmt_ips(value: Optional[float]) -> str:
    """Images (or calls) per second: 2 decimals below 100, 1 below 1000, none above."""
    if value is None:
        return '-'
    return f'{value:.0f}' if value >= 1000 else f'{value:.1f}' if value >= 100 else f'{value:.2f}'


def fmt_ratio(value: Optional[float], prec: int) -> str:
    """A speed-up or realisation with ``prec`` decimals, ``-`` when absent."""
    return '-' if value is None else f'{value:.{prec}f}'


def speed_cell(row: dict, col: str, prec: int) -> str:
    """The text of column ``col`` of a benchmark row."""
    if col == 'model':
        name = f"`{row['name']}`" if '_' in row['name'] else row['name']
        return f"{name} ({row['_label']})" if row['_label'] else name
    if col == 'part':
        return 'whole model' if row['part'] == 'model' else row['part']
    if col == 'dtype':
        return DTYPES.get(row['dtype'], row['dtype'])
    if col == 'backend':
        return BACKENDS.get(row.get('backend'), row.get('backend') or 'pytorch')
    if col == 'batch':
        return str(row['batch'])
    if col == 'input':
        return _field_text(row, 'input')
    if col in ('dense', 'twin', 'dynamic'):
        return fmt_ips(row.get(f'{col}_ips'))
    if col == 'quiet':
        return f"{row['quiet_calls']}/{row['rounds']}" if row.get('quiet_calls') else '-'
    field = {'ideal': 'ideal_speedup', 'realis': 'realisation',
             'realis_cpu': 'realisation_cpu'}.get(col, col)
    return fmt_ratio(row.get(field), prec)


def memory_cell(row: dict, col: str, prec: int) -> str:
    """The text of column ``col`` of a training-step memory row."""
    if col in ('model', 'batch', 'input'):
        return _field_text(row, 'name' if col == 'model' else col)
    if col == 'ratio':
        return f"{row['step_ratio']:.{prec}f}x"
    return f"{row[col.replace('_mib', '_step_mib')]:.0f}"


def flops_cell(data: dict, row: dict, col: str) -> str:
    """The text of column ``col`` for a ``get_flops.py`` file."""
    if col == 'config':
        name = row['_file'][len('flops_'):-len('.json')]
        return f"`{name}`" + (f" ({row['_label']})" if row['_label'] else '')
    if col == 'input':
        return 'x'.join(str(s) for s in data['shape'])
    if col == 'heads_alone':
        return f"{row_figures(data)['heads_alone']:.2f}x"
    dense, dynamic = data[col]['dense'], data[col]['dynamic']
    return f'{dense:.2f} -> {dynamic:.2f} ({dense / dynamic:.2f}x)'


def render_table(bench_dir: Path, spec: str) -> str:
    """The Markdown a ``table`` mark stands for (machine line, blank line, table)."""
    words = spec.split()
    options = [w for w in words[1:] if '.json' not in w]
    sources = [w for w in words[1:] if '.json' in w]
    if not sources or any('=' not in w for w in options):
        raise DocNumbersError(f'cannot read <!-- table: {spec} -->: write KIND [cols=A,B] '
                              '[prec=N] FILE.json[conditions][@label] ...')
    kind, options = words[0], dict(w.split('=', 1) for w in options)
    known = {'speed': SPEED_COLS, 'memory': MEMORY_COLS, 'flops': FLOPS_COLS}
    if kind not in known:
        raise DocNumbersError(f'unknown table kind {kind!r} in <!-- table: {spec} -->: use '
                              'speed, memory or flops')
    cols = options.get('cols', ','.join(known[kind])).split(',')
    unknown = [c for c in cols if c not in known[kind]]
    if unknown:
        raise DocNumbersError(f'unknown columns {unknown} in <!-- table: {spec} -->: the '
                              f'{kind} columns are {list(known[kind])}')
    prec = int(options.get('prec', 2))
    rows = select_rows(bench_dir, sources, kind)
    lines = []
    if kind != 'flops':
        one_machine(rows, f'<!-- table: {spec} -->')
        lines += [machine_line(rows[0][0]['machine']), '']
    lines += ['| ' + ' | '.join(known[kind][c] for c in cols) + ' |',
              '| ' + ' | '.join('---' for _ in cols) + ' |']
    for data, row in rows:
        cells = [speed_cell(row, c, prec) if kind == 'speed' else
                 memory_cell(row, c, prec) if kind == 'memory' else flops_cell(data, row, c)
                 for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n\n'  # a blank line ends the table before the end mark


def update_text(text: str, bench_dir: Path) -> str:
    """``text`` with every ``table`` mark's body regenerated from the JSON files."""
    return TABLE_RE.sub(
        lambda m: (f"<!-- table: {m['spec']} -->\n{render_table(bench_dir, m['spec'])}"
                   '<!-- end table -->\n'), text)


def row_figures(row: dict) -> Dict[str, float]:
    """Every figure a paragraph may quote from one row (or one ``get_flops.py`` file): its
    numeric fields and, for FLOPs files, each part's dense, dynamic and dense / dynamic, and
    ``heads_alone`` (the whole model with the dense backbone and the dynamic neck and heads),
    the op counts of ``--count-ops`` (``ops.<part>.dense / dynamic / ratio``) and the compiled
    kernel counts of ``--count-kernels`` (``kernels.<part>.dense / dynamic / ratio``)."""
    figures = {k: float(v) for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    figures.update({f'{k}.{i}': float(x) for k, v in row.items() if isinstance(v, list)
                    for i, x in enumerate(v) if isinstance(x, (int, float))})
    if 'backbone' in row and isinstance(row['backbone'], dict):
        for part in ('backbone', 'neck_and_heads', 'model'):
            dense, dynamic = row[part]['dense'], row[part]['dynamic']
            figures.update({f'{part}.dense': dense, f'{part}.dynamic': dynamic,
                            f'{part}.ratio': dense / dynamic})
        figures['heads_alone'] = row['model']['dense'] / (
            row['backbone']['dense'] + row['neck_and_heads']['dynamic'])
    for part, counts in (row.get('ops') or {}).items():  # get_flops.py --count-ops
        figures.update({f'ops.{part}.{k}': float(v) for k, v in counts.items()})
    for part, counts in (row.get('kernels') or {}).items():  # get_flops.py --count-kernels
        figures.update({f'kernels.{part}.{k}': float(counts[k])
                        for k in ('dense', 'dynamic', 'ratio')})
    return figures


def _printed_as(value: float, text: str) -> bool:
    """Whether ``value`` rounds to ``text`` (a decimal number) at ``text``'s decimals."""
    decimals = len(text.split('.')[1])
    return math.isfinite(value) and f'{value:.{decimals}f}' == text


def check_paragraph(bench_dir: Path, spec: str, body: str) -> List[str]:
    """The decimal numbers of a checked paragraph that no selected row gives."""
    rows = select_rows(bench_dir, spec.split(), 'numbers')
    one_machine(rows, f'<!-- numbers: {spec} -->')
    figures = [v for _, row in rows for v in row_figures(row).values()]
    prose = re.sub(r'`[^`]*`', '', body).replace('**', '')  # code spans are names, not figures
    return [n for n in DECIMAL_RE.findall(prose) if not any(_printed_as(v, n) for v in figures)]


def iter_problems(path: Path, bench_dir: Path) -> Iterator[str]:
    """Every mismatch between the marks of a Markdown file and the JSON files, one message
    each (naming the file, the line, the mark and what to do)."""
    text = path.read_text()
    for match in TABLE_RE.finditer(text):
        line = text.count('\n', 0, match.start()) + 1
        try:
            expected = render_table(bench_dir, match['spec'])
        except DocNumbersError as exc:
            yield f'{path}:{line}: {exc}'
            continue
        if match['body'] != expected:
            yield (f"{path}:{line}: the table of <!-- table: {match['spec']} --> differs from "
                   'the JSON files; regenerate it: python tools/analysis_tools/'
                   f'benchmark_table.py --update {path}')
    for match in NUMBERS_RE.finditer(text):
        line = text.count('\n', 0, match.start()) + 1
        try:
            wrong = check_paragraph(bench_dir, match['spec'], match['body'])
        except DocNumbersError as exc:
            yield f'{path}:{line}: {exc}'
            continue
        if wrong:
            yield (f"{path}:{line}: {', '.join(wrong)} in the paragraph of <!-- numbers: "
                   f"{match['spec']} --> are not figures of those rows (rounded as printed): "
                   'correct the numbers or the sources')
