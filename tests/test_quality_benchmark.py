"""The quality benchmark's logic without training: its command line, the stages it plans (equal
training: the same schedule, seed and data for the dense model and the student), stage
skipping, per-class IoU against mmseg's IoUMetric, and the report table on fake results."""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_flops import load_tool

from mmdvit.analysis import quality
from mmdvit.analysis.quality import (BenchmarkError, Stage, class_ious, ensure_data, evaluation,
                                     format_report, iou_from_predictions, is_done, make_report,
                                     parse_metrics, plan, run_stage, schedule_options)
from mmdvit.datasets.fine_structure import META_FILE

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f'class{i}' for i in range(150)]


def quality_tool():
    return load_tool(ROOT / 'tools/analysis_tools/quality_benchmark.py')


def cfg_options(command: list) -> dict:
    """The ``--cfg-options`` of a tool command, parsed as the tools parse them."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    start = command.index('--cfg-options')
    return parser.parse_known_args(command[start:])[0].cfg_options


def test_command_line_defaults_and_errors(tmp_path):
    tool = quality_tool()
    args = tool.parse_args([])
    assert (args.teacher_iters, args.iters, args.seed, args.variant) == (600, 300, 0, 'whole')
    assert args.student_config.endswith('configs/demo/upernet_dvit_swin_whole_demo.py')
    assert args.student_options == [] and args.python == sys.executable
    args = tool.parse_args(['--variant', 'b2', '--student-options',
                            'model.student.decode_head.block_size=2', 'a.b=1'])
    assert args.student_options == ['model.student.decode_head.block_size=2', 'a.b=1']
    for bad in (['--iters', '0'], ['--size', '64', '64'], ['--student-options', 'novalue']):
        with pytest.raises(SystemExit):
            tool.parse_args(bad)


def test_schedule_keeps_the_demo_warmup_and_scales_the_decay():
    assert schedule_options(300) == [
        'train_cfg.max_iters=300', 'train_cfg.val_interval=300',
        'default_hooks.checkpoint.interval=300', 'param_scheduler.0.end=30',
        'param_scheduler.1.begin=30', 'param_scheduler.1.end=300']
    assert 'param_scheduler.0.end=1' in schedule_options(2)


def test_plan_trains_dense_and_student_equally_from_the_teacher(tmp_path):
    """Applied to the real demo configs, the dense model and the student get the same data,
    schedule and seed, both start from the teacher's checkpoint, and the student distils from
    it; the student's options reach its training, evaluation and FLOPs count."""
    from mmengine.config import Config
    tool = quality_tool()
    options = ['model.student.decode_head.keep_ratios=(0.5,0.5,0.5)']
    args = tool.parse_args(['--work-dir', str(tmp_path / 'w'), '--data-root', str(tmp_path / 'd'),
                            '--teacher-iters', '40', '--iters', '20', '--seed', '7', '--variant',
                            'k05', '--student-options', *options])
    stages = plan(args, CLASSES)
    assert list(stages) == ['teacher', 'dense', 'k05', 'teacher evaluation', 'dense evaluation',
                            'k05 evaluation', 'flops']
    teacher_ckpt = str(tmp_path / 'w' / 'teacher' / 'iter_40.pth')
    cfgs = {}
    for name in ('teacher', 'dense', 'k05'):
        cfg = Config.fromfile(stages[name].command[2])
        cfg.merge_from_dict(cfg_options(stages[name].command))
        cfgs[name] = cfg
        assert cfg.randomness.seed == 7
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            assert cfg[loader].dataset.data_root == str(tmp_path / 'd')
    assert cfgs['teacher'].train_cfg.max_iters == 40 and cfgs['teacher'].get('load_from') is None
    for name in ('dense', 'k05'):
        cfg = cfgs[name]
        assert cfg.train_cfg.max_iters == cfg.param_scheduler[1].end == 20
        assert cfg.train_cfg.val_interval == cfg.default_hooks.checkpoint.interval == 20
        assert cfg.param_scheduler[0].end == cfg.param_scheduler[1].begin == 10
    assert cfgs['dense'].load_from == teacher_ckpt
    student = cfgs['k05'].model
    assert student.student_checkpoint == student.teacher.checkpoint == teacher_ckpt
    assert student.student.decode_head.keep_ratios == (0.5, 0.5, 0.5)
    assert stages['dense'].inputs == stages['k05'].inputs == [Path(teacher_ckpt)]
    assert stages['k05 evaluation'].command[3] == str(tmp_path / 'w' / 'k05' / 'iter_20.pth')
    assert options[0] in stages['k05 evaluation'].command
    assert stages['flops'].command[-len(options) - 1:] == ['--cfg-options', *options]
    assert '--cfg-options' not in plan(tool.parse_args(['--work-dir', str(tmp_path)]),
                                       CLASSES)['flops'].command
    for reserved in ('dense', 'bad/name'):
        args.variant = reserved
        with pytest.raises(BenchmarkError, match='--variant'):
            plan(args, CLASSES)


def test_teacher_seed_trains_the_teacher_with_its_own_seed(tmp_path):
    """--teacher-seed: the teacher's training takes it, the dense model and the student keep
    --seed, so a second run from one teacher shares the teacher's folder and command and
    trains beside the first run in folders named by its seed; the report's header names both
    seeds."""
    tool = quality_tool()
    common = ['--work-dir', str(tmp_path / 'w'), '--data-root', str(tmp_path / 'd')]
    again = plan(tool.parse_args([*common, '--seed', '11', '--teacher-seed', '1']), CLASSES)
    first = plan(tool.parse_args([*common, '--seed', '1']), CLASSES)
    assert again['teacher'].command == first['teacher'].command
    assert 'randomness.seed=1' in again['teacher'].command
    for name in ('dense', 'whole'):
        assert 'randomness.seed=11' in again[name].command
        assert 'randomness.seed=1' in first[name].command
        assert first[name].directory == tmp_path / 'w' / name
        assert again[name].directory == tmp_path / 'w' / f'{name}_seed11'
        assert again[name].inputs == first[name].inputs == [first['teacher'].output]
    assert again['flops'].output == tmp_path / 'w' / 'whole_seed11' / 'flops.json'
    same = plan(tool.parse_args([*common, '--seed', '1', '--teacher-seed', '1']), CLASSES)
    assert same['dense'].directory == tmp_path / 'w' / 'dense'
    settings = dict(variant='whole', teacher_iters=600, iters=300, seed=11, teacher_seed=1,
                    data=dict(num_val=100))
    models = dict(dense=fake_model(70.0, {'sky': 90.0}), whole=fake_model(65.0, {'sky': 80.0}))
    header = format_report(make_report(settings, models, None, {})).splitlines()[0]
    assert '(seed 11, teacher seed 1; 100 validation images)' in header
    settings['teacher_seed'] = 11
    header = format_report(make_report(settings, models, None, {})).splitlines()[0]
    assert '(seed 11; 100 validation images)' in header


def test_distill_from_dense_uses_the_dense_model_trained_as_long(tmp_path):
    """--distill-from dense: the student still starts from the teacher but distils from the
    dense model trained as long as its total (its checkpoint is a recorded input)."""
    from mmengine.config import Config
    tool = quality_tool()
    args = tool.parse_args(['--work-dir', str(tmp_path / 'w'), '--teacher-iters', '40',
                            '--iters', '20', '--distill-from', 'dense'])
    stages = plan(args, CLASSES)
    cfg = Config.fromfile(stages['whole'].command[2])
    cfg.merge_from_dict(cfg_options(stages['whole'].command))
    teacher_ckpt = tmp_path / 'w' / 'teacher' / 'iter_40.pth'
    dense_ckpt = tmp_path / 'w' / 'dense' / 'iter_20.pth'
    assert cfg.model.student_checkpoint == str(teacher_ckpt)
    assert cfg.model.teacher.checkpoint == str(dense_ckpt) == str(stages['dense'].output)
    assert set(stages['whole'].inputs) == {teacher_ckpt, dense_ckpt}
    with pytest.raises(SystemExit):
        tool.parse_args(['--distill-from', 'student'])


def test_a_student_without_a_teacher_gets_no_teacher_checkpoint(tmp_path):
    """The fine-structure demo config (teacher=None, no distillation) trains from the teacher's
    checkpoint without a teacher (mmengine refuses ``model.teacher.checkpoint`` options on a
    ``teacher=None`` config); the shipped whole-model demo still distils."""
    from mmengine.config import Config
    tool = quality_tool()
    fine = str(ROOT / 'configs/demo/upernet_dvit_swin_whole_fine_demo.py')
    args = tool.parse_args(['--work-dir', str(tmp_path / 'w'), '--teacher-iters', '40',
                            '--iters', '20', '--student-config', fine, '--variant', 'fine'])
    stages = plan(args, CLASSES)
    cfg = Config.fromfile(stages['fine'].command[2])
    cfg.merge_from_dict(cfg_options(stages['fine'].command))
    teacher_ckpt = tmp_path / 'w' / 'teacher' / 'iter_40.pth'
    assert cfg.model.teacher is None and cfg.model.student_checkpoint == str(teacher_ckpt)
    assert cfg.model.logit_distill_weight == cfg.model.feature_distill_weight == 0
    assert stages['fine'].inputs == [teacher_ckpt]
    assert not quality.distils(fine, [])
    assert not quality.distils(fine, ['model.logit_distill_weight=0.5'])
    assert quality.distils(str(ROOT / 'configs/demo/upernet_dvit_swin_whole_demo.py'), [])


def counting_stage(tmp_path: Path, value: str = 'a', strict: bool = True, inputs=()) -> Stage:
    """A stage whose command appends a line to runs.txt and writes out.txt."""
    script = (f"open({str(tmp_path / 'runs.txt')!r}, 'a').write('run\\n'); "
              f"open({str(tmp_path / 'out.txt')!r}, 'w').write({value!r})")
    return Stage('count', [sys.executable, '-c', script], tmp_path / 'out.txt',
                 tmp_path / 'stage', list(inputs), strict=strict)


def test_stages_are_skipped_when_done_and_rerun_or_refused_when_changed(tmp_path):
    def runs() -> int:
        return len((tmp_path / 'runs.txt').read_text().splitlines())

    source = tmp_path / 'input.pth'
    source.write_text('teacher 1')
    stage = counting_stage(tmp_path, inputs=[source])
    assert not is_done(stage)
    run_stage(stage, log=lambda msg: None)
    run_stage(stage, log=lambda msg: None)
    assert runs() == 1 and is_done(stage)
    source.write_text('teacher 2, retrained')  # a new input: the stage runs again
    assert not is_done(stage)
    run_stage(stage, log=lambda msg: None)
    assert runs() == 2
    (tmp_path / 'out.txt').unlink()  # output gone: runs again
    run_stage(stage, log=lambda msg: None)
    assert runs() == 3
    with pytest.raises(BenchmarkError, match='other settings'):  # training with other options
        is_done(counting_stage(tmp_path, 'b', inputs=[source]))
    assert not is_done(counting_stage(tmp_path, 'b', strict=False, inputs=[source]))

    failing = Stage('fail', [sys.executable, '-c', 'print("boom"); raise SystemExit(3)'],
                    tmp_path / 'never', tmp_path / 'fail')
    with pytest.raises(BenchmarkError, match='status 3(.|\n)*boom'):
        run_stage(failing, log=lambda msg: None)
    assert not is_done(failing)


def test_an_evaluation_run_again_starts_from_an_empty_prediction_folder(tmp_path):
    """tools/test.py refuses an --out folder that holds files; an evaluation stage run again
    for a retrained checkpoint empties its own prediction folder first."""
    checkpoint, pred, out = tmp_path / 'iter_600.pth', tmp_path / 'eval' / 'pred', tmp_path / 'o'
    checkpoint.write_text('model 1')
    script = ('import os, sys; pred, out = sys.argv[1:]\n'
              'if os.path.isdir(pred) and os.listdir(pred): raise SystemExit("not empty")\n'
              'os.makedirs(pred, exist_ok=True); open(os.path.join(pred, "a.png"), "w").close()\n'
              'open(out, "w").close()')
    stage = Stage('dense evaluation', [sys.executable, '-c', script, str(pred), str(out)], out,
                  tmp_path / 'eval', [checkpoint], strict=False, fresh=[pred])
    run_stage(stage, log=lambda msg: None)
    checkpoint.write_text('model 1, trained again')
    assert not is_done(stage)
    run_stage(stage, log=lambda msg: None)  # would fail with 'not empty' without ``fresh``
    assert is_done(stage) and [p.name for p in pred.iterdir()] == ['a.png']


def write_pngs(folder: Path, maps: list) -> None:
    folder.mkdir(parents=True)
    for i, values in enumerate(maps):
        Image.fromarray(values.astype(np.uint8)).save(folder / f'ADE_val_{i:08d}.png')


def test_per_class_iou_matches_mmseg_iou_metric(tmp_path):
    """Predictions in the label values ``tools/test.py --out`` writes (class + 1) against
    annotations with 0 = ignored, compared with mmseg's own intersect-and-union arithmetic."""
    import torch
    from mmseg.evaluation import IoUMetric
    rng = np.random.default_rng(0)
    labels = [rng.choice([0, 2, 3, 13, 94], size=(20, 30), p=[0.1, 0.4, 0.3, 0.1, 0.1])
              for _ in range(3)]
    preds = [np.where(rng.uniform(size=lab.shape) < 0.7, np.maximum(lab, 2),
                      rng.choice([2, 3, 13, 94, 127], size=lab.shape)) for lab in labels]
    write_pngs(tmp_path / 'ann', labels)
    write_pngs(tmp_path / 'pred', preds)
    ours = class_ious(iou_from_predictions(tmp_path / 'pred', tmp_path / 'ann'), CLASSES)

    totals = [0, 0, 0, 0]
    for lab, pred in zip(labels, preds):  # reduce_zero_label: v -> v - 1, 0 -> 255 (ignored)
        gt = torch.from_numpy(np.where(lab == 0, 255, lab - 1))
        out = IoUMetric.intersect_and_union(torch.from_numpy(pred - 1), gt, 150, 255)
        totals = [t + o for t, o in zip(totals, out)]
    iou = IoUMetric.total_area_to_metrics(*totals, ['mIoU'])['IoU']
    present = {CLASSES[i]: 100 * v for i, v in enumerate(iou) if not np.isnan(v)}
    assert set(ours['per_class']) == set(present) == {'class1', 'class2', 'class12', 'class93',
                                                      'class126'}
    for name, value in present.items():
        assert ours['per_class'][name] == pytest.approx(value, abs=1e-9)
    assert ours['mIoU'] == pytest.approx(np.nanmean(iou) * 100, abs=1e-9)
    assert ours['label_pixels']['class126'] == 0 and ours['per_class']['class126'] == 0

    # evaluation(): the recomputed mIoU must agree with the printed one.
    log = f'noise\nmetrics: {{"aAcc": 1.0, "mIoU": {ours["mIoU"] + 0.01:.4f}}}\n'
    assert evaluation(log, tmp_path / 'pred', tmp_path / 'ann', CLASSES)['metrics']['aAcc'] == 1
    with pytest.raises(BenchmarkError, match='other predictions'):
        evaluation('metrics: {"mIoU": 1.0}', tmp_path / 'pred', tmp_path / 'ann', CLASSES)
    (tmp_path / 'pred' / 'ADE_val_00000001.png').unlink()
    with pytest.raises(BenchmarkError, match='no prediction'):
        iou_from_predictions(tmp_path / 'pred', tmp_path / 'ann')


def test_parse_metrics_takes_the_last_line():
    text = 'metrics: {"mIoU": 1.0}\nlog\nmetrics: {"mIoU": 2.5, "aAcc": 90.0}\n'
    assert parse_metrics(text) == {'mIoU': 2.5, 'aAcc': 90.0}
    with pytest.raises(BenchmarkError, match='metrics'):
        parse_metrics('no metrics here')


def fake_model(miou: float, per_class: dict, spurious: int = 0) -> dict:
    per_class = dict(per_class, **{f'other{i}': 0.0 for i in range(spurious)})
    pixels = {n: (0 if n.startswith('other') else 100) for n in per_class}
    return dict(mIoU=miou, per_class=per_class, label_pixels=pixels, metrics=dict(mIoU=miou))


def test_report_table_side_by_side():
    settings = dict(variant='whole', teacher_iters=600, iters=300, seed=0,
                    data=dict(num_val=100))
    models = dict(teacher=fake_model(60.0, {}),
                  dense=fake_model(70.0, {'sky': 90.0, 'fence': 40.0, 'pole': 50.0,
                                          'car': 60.0}),
                  whole=fake_model(65.5, {'sky': 91.0, 'fence': 30.0, 'pole': 45.0,
                                          'car': 52.5}, spurious=2))
    flops = dict(shape=[128, 128], dense=0.305, dynamic=0.164, ratio=0.305 / 0.164)
    report = make_report(settings, models, flops, {'teacher': 100.0, 'dense': 50.0})
    assert report['difference']['mIoU'] == -4.5
    assert report['difference']['per_class'] == {'sky': 1.0, 'fence': -10.0, 'pole': -5.0,
                                                 'car': -7.5}
    lines = format_report(report).splitlines()
    assert 'teacher 600 iterations (mIoU 60.00), then 300 more' in lines[0]
    assert 'not accuracy' in lines[0]
    rows = {line[:18].strip(): line[18:].split() for line in lines[1:]}
    assert rows['mIoU'] == ['70.00', '65.50', '-4.50']
    assert rows['large (mean)'] == ['90.00', '91.00', '+1.00']
    assert rows['thin (mean)'] == ['45.00', '37.50', '-7.50']
    assert rows['small (mean)'] == ['60.00', '52.50', '-7.50']
    assert rows['fence'] == ['thin', '40.00', '30.00', '-10.00']
    names = [line[:18].strip() for line in lines[6:10]]
    assert names == ['sky', 'fence', 'pole', 'car']  # by group (large, thin, small), then name
    assert any('predicted (IoU 0' in line and 'dense 0, whole 2' in line for line in lines)
    assert any('dense 0.305, whole 0.164 (1.86x fewer)' in line for line in lines)
    assert lines[-1] == 'wall time: teacher 100 s, dense 50 s; total 150 s'

    settings['variant'] = 'whole_nodistill'  # a long name widens the columns
    models['whole_nodistill'] = models.pop('whole')
    lines = format_report(make_report(settings, models, None, {})).splitlines()
    assert lines[1].split() == ['group', 'dense', 'whole_nodistill', 'diff']
    assert lines[2].split() == ['mIoU', '70.00', '65.50', '-4.50']


def test_summary_of_several_runs_gives_each_run_and_the_mean_and_worst_per_class(tmp_path,
                                                                                  capsys):
    """Two seeds of one variant: per run the mIoU gap and its worst small class; per class the
    mean and the worst gap over the runs that have it; read back from report files by the
    tool's --summarize, and a file that is not a report named in the error."""
    def report(seed, dense, student):
        settings = dict(variant='fine', teacher_iters=600, iters=300, seed=seed,
                        data=dict(num_val=100))
        models = dict(teacher=fake_model(50.0, {}), dense=fake_model(dense[0], dense[1]),
                      fine=fake_model(student[0], student[1]))
        return make_report(settings, models, None, {})

    runs = [report(0, (70.0, {'sky': 90.0, 'car': 60.0, 'person': 50.0}),
                   (68.0, {'sky': 89.0, 'car': 57.0, 'person': 49.0})),
            report(1, (72.0, {'sky': 92.0, 'car': 40.0}),
                   (71.0, {'sky': 93.0, 'car': 33.0}))]
    summary = quality.summarize(runs)
    assert [(r['seed'], r['diff'], r['worst_small']) for r in summary['runs']] == [
        (0, -2.0, ('car', -3.0)), (1, -1.0, ('car', -7.0))]
    classes = summary['classes']
    assert list(classes) == ['mIoU', 'sky', 'car', 'person']  # mIoU, then large, small
    assert classes['mIoU'] == dict(group='', mean=-1.5, worst=-2.0, runs=2, dense_spread=None)
    assert classes['car'] == dict(group='small', mean=-5.0, worst=-7.0, runs=2, dense_spread=None)
    assert classes['sky'] == dict(group='large', mean=0.0, worst=-1.0, runs=2, dense_spread=None)
    assert classes['person'] == dict(group='small', mean=-1.0, worst=-1.0, runs=1,
                                     dense_spread=None)
    assert summary['dense_repeats'] == []  # two teachers (seeds 0 and 1)
    paths = []
    for i, data in enumerate(runs):
        paths.append(tmp_path / f'report{i}.json')
        paths[-1].write_text(json.dumps(data))
    quality_tool().main(['--summarize', *map(str, paths)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ['fine', '0', '70.00', '68.00', '-2.00', 'car', '-3.00']
    assert lines[5].split() == ['mIoU', '-1.50', '-2.00', '2']
    assert lines[7].split() == ['car', 'small', '-5.00', '-7.00', '2']
    (tmp_path / 'other.json').write_text('{"rows": []}')
    with pytest.raises(SystemExit, match='other.json: not a report'):
        quality_tool().main(['--summarize', str(tmp_path / 'other.json')])
    with pytest.raises(SystemExit, match='missing.json: cannot read'):
        quality_tool().main(['--summarize', str(tmp_path / 'missing.json')])


def test_summary_compares_dense_models_trained_again_from_one_teacher(capsys):
    """Runs from one teacher (--teacher-seed) with other seeds: the later dense models against
    the first, per class, and the largest absolute difference beside each class; a run of
    another teacher or the same seed adds no repeat."""
    def report(seed, teacher_seed, teacher_miou, dense):
        settings = dict(variant='fine', teacher_iters=600, iters=300, seed=seed,
                        teacher_seed=teacher_seed, data=dict(num_val=100))
        models = dict(teacher=fake_model(teacher_miou, {}), dense=fake_model(*dense),
                      fine=fake_model(60.0, {'sky': 90.0, 'car': 30.0}))
        return make_report(settings, models, None, {})

    runs = [report(1, 1, 38.0, (64.0, {'sky': 91.0, 'car': 40.0})),
            report(11, 1, 38.0, (62.5, {'sky': 92.0, 'car': 33.0})),
            report(21, 1, 38.0, (65.0, {'sky': 90.0, 'car': 44.0})),
            report(1, 1, 38.0, (64.0, {'sky': 91.0, 'car': 40.0})),  # the same seed again
            report(3, 3, 39.0, (70.0, {'sky': 95.0, 'car': 20.0}))]  # another teacher
    summary = quality.summarize(runs)
    repeats = summary['dense_repeats']
    assert [(r['teacher_seed'], r['seeds'], r['diff']['mIoU']) for r in repeats] == [
        (1, [1, 11], -1.5), (1, [1, 21], 1.0)]
    assert repeats[0]['diff']['per_class'] == {'sky': 1.0, 'car': -7.0}
    classes = summary['classes']
    assert classes['car']['dense_spread'] == 7.0 and classes['sky']['dense_spread'] == 1.0
    assert classes['mIoU']['dense_spread'] == 1.5
    lines = quality.format_summary(summary).splitlines()
    assert ('dense again from teacher seed 1: seed 11 - seed 1: mIoU -1.50; largest small '
            'class car -7.00') in lines
    car = next(line for line in lines if line.startswith('car '))
    assert car.split()[-1] == '7.00'


def test_data_written_once_then_checked(tmp_path):
    notes = []
    root = tmp_path / 'fs'
    meta = ensure_data(root, 2, 1, 0, (64, 80), notes.append)
    assert meta['num_train'] == 2 and len(list((root / 'images/training').glob('*.jpg'))) == 2
    stamp = os.stat(root / META_FILE).st_mtime_ns
    assert ensure_data(root, 2, 1, 0, (64, 80), notes.append)['seed'] == 0
    assert os.stat(root / META_FILE).st_mtime_ns == stamp  # not written again
    with pytest.raises(BenchmarkError, match='--num-val'):
        ensure_data(root, 2, 3, 0, (64, 80), notes.append)
    own = tmp_path / 'own'
    (own / 'annotations' / 'validation').mkdir(parents=True)
    assert ensure_data(own, 2, 1, 0, (64, 80), notes.append)['generator'] is None
    assert 'as it is' in notes[-1]



def test_config_checks(tmp_path):
    quality.check_config(str(ROOT / 'configs/demo/upernet_swin_dense_demo.py'))
    quality.check_config(str(ROOT / 'configs/demo/upernet_dvit_swin_whole_demo.py'))
    other = tmp_path / 'other.py'
    other.write_text(f"_base_ = '{ROOT}/configs/demo/upernet_swin_dense_demo.py'\n"
                     "param_scheduler = [dict(type='PolyLR', by_epoch=False, begin=0, end=10)]\n")
    with pytest.raises(BenchmarkError, match='PolyLR'):
        quality.check_config(str(other))
    coco = ROOT / 'configs/demo/maskrcnn_dvit_swin_demo.py'
    with pytest.raises(BenchmarkError):
        quality.check_config(str(coco))


def test_dry_run_lists_the_stages(tmp_path, capsys):
    tool = quality_tool()
    tool.main(['--work-dir', str(tmp_path), '--dry-run', '--iters', '5'])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(' (')[0] for line in out] == [
        'teacher', 'dense', 'whole', 'teacher evaluation', 'dense evaluation',
        'whole evaluation', 'whole FLOPs']
    assert all('(runs)' in line for line in out)
    assert not (tmp_path / 'teacher').exists()
