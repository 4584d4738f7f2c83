"""The sparse core (``mmdvit.sparse``) imports with torch alone: no OpenMMLab package, no
timm, no numpy-only helper is needed to build predictors, decide and route."""
import subprocess
import sys
import textwrap

BLOCKED = ('mmengine', 'mmcv', 'mmseg', 'mmdet', 'mmpretrain', 'timm', 'onnx', 'onnxruntime')


def test_core_imports_with_openmmlab_blocked():
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {BLOCKED!r}:
                    raise ImportError('blocked: ' + name)
                return None

        sys.meta_path.insert(0, Block())
        import torch
        import mmdvit.sparse as core
        from mmdvit.sparse import BlockScorePredictor, decide, route_tokens

        tokens = torch.randn(2, 16, 8)
        predictor = core.ScorePredictor(8).eval()
        decision = decide(predictor(tokens), 0.5, False, 0, 0, (4, 4))
        out = route_tokens(tokens, lambda t: t * 2, lambda t: t, decision)
        kept = decision.keep_mask.bool()
        assert torch.equal(out[kept], tokens[kept] * 2)
        assert torch.equal(out[~kept], tokens[~kept])
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})
        assert not loaded, loaded
        print('core ok')
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'core ok' in result.stdout
