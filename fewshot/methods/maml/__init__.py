"""MAML (Finn et al. 2017) and its variants, in one package; importing it registers ``maml``.

- :mod:`.functional`: MAML as pure functions of parameter dicts through ``torch.func``
  (:func:`inner_loop`, :func:`task_logits`, :func:`batched_logits`, :func:`maml_logits`).
- :mod:`.norms`: batch/instance/layer norm in primitive ops, for exact second-order gradients
  under ``vmap`` (:class:`DecomposedNorms`).
- :mod:`.step_norms`: per-step BatchNorm running statistics (``bn=per_step``, experimental).
- :mod:`.learner`: the :class:`MAML` learner and its typed :class:`MAMLConfig`.
"""

from .functional import TaskConfig, batched_logits, bn_free_buffers, inner_loop, maml_logits, task_logits
from .learner import MAML, MAMLConfig, build_maml, paper_eval_steps
from .norms import DecomposedNorms
from .step_norms import StepStatistics

__all__ = [
    "MAML", "DecomposedNorms", "MAMLConfig", "StepStatistics", "TaskConfig", "batched_logits",
    "bn_free_buffers", "build_maml", "inner_loop", "maml_logits", "paper_eval_steps", "task_logits",
]
