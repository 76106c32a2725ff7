"""Training losses shared by the classifiers: the knowledge-distillation loss (Hinton, Vinyals & Dean 2015).

Its own module so that :mod:`.torch_base` (every network's training loop) and :mod:`.distill` (the
student) both import it without importing each other.
"""

from __future__ import annotations

IGNORE = -1  # target of a transfer-set map: no label, distilled only


def kd_loss(student_logits, teacher_logits, targets, alpha: float, temperature: float, weight=None):
    """α·T²·KL(p_t^T ‖ p_s^T) + (1−α)·CE(s, y); targets == -1 (no label) are left out of the CE term.

    The KL term is averaged over every sample of the batch (labelled or not), the CE term over the
    labelled ones (class-weighted when ``weight`` is given).
    """
    import torch
    import torch.nn.functional as F

    alpha = float(alpha)
    T = float(temperature)
    total = student_logits.new_zeros(())
    if alpha > 0:
        log_ps = F.log_softmax(student_logits / T, dim=1)
        log_pt = F.log_softmax(teacher_logits.detach() / T, dim=1)
        kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
        total = total + alpha * T * T * kl
    if alpha < 1:
        labelled = targets != IGNORE
        if bool(labelled.any()):
            ce = F.cross_entropy(student_logits[labelled], targets[labelled], weight=weight)
            total = total + (1.0 - alpha) * ce
        else:
            total = total + 0.0 * student_logits.sum()  # keeps the graph for a batch of transfer maps only
    return total if isinstance(total, torch.Tensor) else torch.as_tensor(total)
