"""``compile_networks``: torch.compile of the UNet, the SGN and the decoder keeps the results and the keys.

Inductor's code generation takes minutes on a CPU; the quick ``eager`` backend checks the wiring (graph
capture of the three networks, keys, results).
"""

from tests.conftest import assert_close
from tests.vlmdiff.test_precision import tiny_model
from vlmdiff.precision import compile_networks, compiled_networks, is_compiled


def test_compiled_networks_give_the_fp32_maps(tiny_state_dict, golden):
    g = golden("test_path")
    m = tiny_model(tiny_state_dict)
    kw = dict(posterior_noise=g["test.posterior_eps"][:1], noise=g["test.q_noise"][:1], ddim_steps=2)
    plain = m.reconstruct(g["test.images"][:1], **kw)
    keys = list(m.state_dict())
    compile_networks(m, backend="eager")
    assert all(is_compiled(module) for module in compiled_networks(m))
    assert list(m.state_dict()) == keys  # checkpoints keep their keys
    compiled = m.reconstruct(g["test.images"][:1], **kw)
    assert_close(compiled["samples"], plain["samples"], rel=1e-4, name="compiled samples")
