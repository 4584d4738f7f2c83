# The dense teacher of the demo job: configs/demo/upernet_dvit_swin_demo.py's segmentor without
# the wrapper and with a dense backbone (sparse_stages=(), i.e. mmseg's Swin), trained the same
# way on the demo data. tools/run_demo.sh trains it first; its last checkpoint is the demo's
# teacher.checkpoint, as the dense UPerNet Swin-T release is configs/upernet_dvit_swin.py's.
_base_ = './upernet_dvit_swin_demo.py'

model = dict(
    _base_.model.student,
    _delete_=True,
    backbone=dict(_base_.model.student.backbone, sparse_stages=(), pruning_locs=None))
