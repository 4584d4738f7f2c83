"""The benchmark and FLOPs numbers that README.md and docs/*.md quote equal the JSON files under
docs/benchmarks/: generated tables are what the generator writes from the files, checked
paragraphs quote only figures of the rows they name, and a changed number is reported."""
import json
import re
from pathlib import Path

import pytest

from mmdvit.analysis.doc_numbers import (DECIMAL_RE, NUMBERS_RE, TABLE_RE, DocNumbersError,
                                         check_paragraph, iter_problems, render_table,
                                         update_text)
from test_flops import load_tool

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / 'docs' / 'benchmarks'
DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark_table.py'


def marks(doc: Path) -> list:
    """The specs of the table and paragraph marks of ``doc``."""
    text = doc.read_text()
    return [m['spec'] for regex in (TABLE_RE, NUMBERS_RE) for m in regex.finditer(text)]


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_marked_table_and_paragraph_matches_the_json_files(doc):
    assert list(iter_problems(doc, BENCH)) == []


def test_every_benchmark_json_file_is_quoted_through_a_mark():
    named = {m.split('[')[0].split('@')[0] for doc in DOCS for spec in marks(doc)
             for m in spec.split() if '.json' in m}
    assert sorted(p.name for p in BENCH.glob('*.json')) == sorted(named)


def test_docs_that_quote_measurements_carry_marks():
    marked = {doc.name for doc in DOCS if marks(doc)}
    assert {'README.md', 'efficiency.md', 'whole_model.md', 'deployment.md',
            'classification.md', 'lvvit.md'} <= marked


def _cells(doc: Path, header_start: str):
    """The rows of the first table of ``doc`` whose header starts with ``header_start``."""
    lines = doc.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def _close(text: str, value: float) -> bool:
    """``text`` (a printed decimal) is ``value`` within half a unit of its last digit."""
    decimals = len(text.split('.')[1]) if '.' in text else 0
    return abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-12


def test_generated_speed_table_agrees_with_the_json_rows():
    # an independent reading of docs/efficiency.md's float32 CPU table: every row found in
    # cpu_224.json by model and batch, every figure within the rounding of its last digit
    rows = json.loads((BENCH / 'cpu_224.json').read_text())['rows']
    table = _cells(ROOT / 'docs' / 'efficiency.md', '| model | part | dtype | batch | input | '
                   'dense | twin |')
    assert len(table) == len(rows) == 9
    for cells in table:
        name, batch = cells[0], int(cells[3])
        row = next(r for r in rows if r['name'] == name and r['batch'] == batch)
        for text, key in zip(cells[5:], ('dense_ips', 'twin_ips', 'dynamic_ips', 'speedup',
                                         'ideal_speedup', 'realisation', 'realisation_cpu')):
            assert _close(text, row[key]), (name, batch, key, text, row[key])


def test_generated_flops_table_agrees_with_the_json_files():
    # README's whole-model FLOPs rows, read back: "dense -> dynamic (ratio x)"
    for cells in _cells(ROOT / 'README.md', '| config | input | backbone dense -> dynamic'):
        data = json.loads((BENCH / f"flops_{cells[0].strip('`')}.json").read_text())
        for text, part in zip(cells[2:], ('backbone', 'model')):
            dense, dynamic, ratio = re.match(r'([\d.]+) -> ([\d.]+) \(([\d.]+)x\)', text).groups()
            expected = data[part]
            assert _close(dense, expected['dense']) and _close(dynamic, expected['dynamic'])
            assert _close(ratio, expected['dense'] / expected['dynamic'])


def test_a_changed_table_number_is_reported(tmp_path):
    doc = tmp_path / 'README.md'
    text = (ROOT / 'README.md').read_text()
    swin = json.loads((BENCH / 'flops_upernet_dvit_swin_whole.json').read_text())
    quoted = f"{swin['model']['dense']:.2f} -> {swin['model']['dynamic']:.2f}"
    assert quoted in text
    doc.write_text(text.replace(quoted, quoted.replace(quoted[:6], '236.87'), 1))
    problems = list(iter_problems(doc, BENCH))
    assert len(problems) == 1 and 'flops_upernet_dvit_swin_whole.json' in problems[0]
    assert '--update' in problems[0]
    # regenerating the tables restores the original text
    assert update_text(doc.read_text(), BENCH) == text


def test_a_changed_paragraph_number_is_reported(tmp_path):
    doc = tmp_path / 'efficiency.md'
    text = (ROOT / 'docs' / 'efficiency.md').read_text()
    sentence = 'ConvNeXt-T 1.27x float32 / 1.47x float16'
    assert sentence in text
    doc.write_text(text.replace(sentence, sentence.replace('1.47x', '1.49x')))
    problems = list(iter_problems(doc, BENCH))
    assert len(problems) == 1 and problems[0].startswith(f'{doc}:')
    assert '1.49 in the paragraph of <!-- numbers: cuda_h200_224.json[batch=64] -->' in problems[0]


def test_the_cli_checks_and_regenerates(tmp_path, capsys):
    tool = load_tool(str(TOOL))
    doc = tmp_path / 'doc.md'
    mark = '<!-- table: memory cpu_224.json[name=deit-s] -->\n'
    doc.write_text(mark + '| stale |\n<!-- end table -->\n')
    assert tool.main(['--check', str(doc)]) == 1
    assert 'differs from the JSON files' in capsys.readouterr().out
    assert tool.main(['--update', str(doc)]) == 0
    assert tool.main(['--check', str(doc)]) == 0
    assert '| deit-s | 8 | 224x224 | 460 | 529 | 1.15x |' in doc.read_text()


def test_rows_of_two_machines_are_refused_in_a_table_and_a_paragraph():
    with pytest.raises(DocNumbersError, match='mixes rows of 2 machines'):
        render_table(BENCH, 'speed cpu_224.json cpu_head_convs.json')
    with pytest.raises(DocNumbersError, match='mixes rows of 2 machines'):
        check_paragraph(BENCH, 'cpu_224.json cuda_h200_224.json', '1.07x and 1.59x')
    # FLOPs files carry no machine: they go with any one machine's rows
    assert check_paragraph(BENCH, 'cpu_224.json flops_imagenet_dvit_deit.json', '4.60') == []


def test_a_source_that_selects_nothing_or_is_missing_names_the_fix():
    with pytest.raises(DocNumbersError, match='selects no row of cpu_224.json'):
        render_table(BENCH, 'speed cpu_224.json[batch=7]')
    with pytest.raises(DocNumbersError, match='does not exist'):
        check_paragraph(BENCH, 'cpu_999.json', 'x 1.00x')


def test_only_measured_decimals_are_checked():
    text = 'torch 2.14.1, 8.8e-7, r0.7, >= 0.9, <=1.3x, 1.53x and **0.24**-0.50x'
    assert DECIMAL_RE.findall(text.replace('**', '')) == ['1.53', '0.24', '0.50']


def _write(folder: Path, name: str, data: dict) -> None:
    (folder / name).write_text(json.dumps(data))


def test_quality_reports_per_module_timings_and_op_counts_are_checked(tmp_path):
    """Quality reports give each model's mIoU, per-class IoU and group means, and the variant's
    differences to the dense model; ``--per-module`` timings, ``--count-ops`` and
    ``--count-kernels`` counts are figures too. A number none of them gives is reported."""
    groups = {'small': ['car', 'person']}
    report = {'settings': {'variant': 'v', 'data': {'groups': groups}},
              'flops': {'dense': 0.3054, 'dynamic': 0.1697, 'ratio': 1.7996},
              'models': {'dense': {'mIoU': 43.07, 'per_class': {'car': 11.7, 'person': 55.9}},
                         'v': {'mIoU': 41.54, 'per_class': {'car': 8.8, 'person': 51.2}}}}
    _write(tmp_path, 'quality_v.json', report)
    # small: dense 33.8, variant 30.0, difference 3.8; mIoU difference 1.53
    assert check_paragraph(tmp_path, 'quality_v.json',
                           'v: 41.54 (-1.53), small 30.0 (-3.8), car -2.9, 1.80x\n') == []
    assert check_paragraph(tmp_path, 'quality_v.json[model=v]', 'small 30.1\n') == ['30.1']
    machine = {'cpu': 'X'}
    _write(tmp_path, 'modules.json', {'machine': machine, 'rows': [], 'modules': [{
        'name': 'm', 'batch': 1, 'units': [{'name': 'stage0', 'dense_ms': 320.77,
                                            'sparse_ms': 172.97, 'speedup': 1.8545}],
        'total': {'name': 'total', 'dense_ms': 7685.1, 'sparse_ms': 4454.1, 'speedup': 1.73}}]})
    assert check_paragraph(tmp_path, 'modules.json', '| stage0 | 320.8 | 173.0 | 1.85x |\n') == []
    assert check_paragraph(tmp_path, 'modules.json', '| stage0 | 320.8 | 173.1 |\n') == ['173.1']
    _write(tmp_path, 'ops.json', {'ops': {'model': {'dense': 477, 'dynamic': 840,
                                                    'ratio': 1.761}},
                                  'kernels': {'model': {'dense': 178, 'dynamic': 334,
                                                        'ratio': 1.8764,
                                                        'dense_kinds': {'generated': 88}}}})
    assert check_paragraph(tmp_path, 'ops.json', '840 of 477: 1.76; compiled 1.88\n') == []
    assert check_paragraph(tmp_path, 'ops.json', '1.77\n') == ['1.77']
