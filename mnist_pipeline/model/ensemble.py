"""An ensemble of networks in one model: trained together, predicting the mean probability.

`model.members: N` builds N networks of the same architecture, each initialised from its
own draw of the seeded RNG, into one nn.Module. In train mode its forward returns every
member's log-probabilities, (N, B, 10), and the loss is the sum of the members' losses:
each member then gets exactly the gradient it would get alone (Adam's steps are per
parameter), so training them in one loop is training them side by side. In eval mode the
forward returns the log of the members' mean probability, (B, 10), like any single
network, so predict, validation, the model file (tensor names `members.<i>.…`) and
checkpoints handle an ensemble without knowing it is one.

Test-time shifts (`model.tta`) live here too: in eval mode every member also sees the
image moved by one pixel up, down, left and right, and the forward averages all those
probabilities. Being part of the forward, they apply wherever the model predicts:
`predict`, validation, `serve` and the ONNX export. A single network with `tta` is an
Ensemble of one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

# (rows, columns) each test-time copy is moved by: the image itself, then one pixel
# up, down, left and right. MNIST digits sit in a 20x20 box inside 28x28, so a one-pixel
# shift never pushes ink out of the frame.
TTA_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


class Ensemble(nn.Module):
    def __init__(
        self, members: list[nn.Module], *, tta: bool = False, background: float = 0.0
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta = tta
        self.background = background  # the standardised value of a blank pixel

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28), or (N, B, 1, 28, 28) with each member's own (augmented) copy.

        Train mode: (N, B, 10), each member's log-probabilities. Eval mode: (B, 10), the
        log of the mean of the members' probabilities.
        """
        if images.dim() == 5:
            outputs = [member(copy) for member, copy in zip(self.members, images, strict=True)]
        elif self.tta and not self.training:
            views = shifted_views(images, self.background)  # (S, B, 1, 28, 28)
            outputs = [member(view) for member in self.members for view in views]
        else:
            outputs = [member(images) for member in self.members]
        stacked = torch.stack(outputs)  # (N, B, 10), or (N * S, B, 10) with shifts
        return stacked if self.training else mean_of_probabilities(stacked)


def shifted_views(images: torch.Tensor, background: float) -> list[torch.Tensor]:
    """(B, 1, 28, 28) -> one copy per TTA_SHIFTS entry, the uncovered edge set to background.

    Pad-and-crop rather than torch.roll, so nothing wraps around from the other edge
    (and it exports to ONNX as Pad + Slice).
    """
    side_rows, side_cols = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), value=background)  # (B, 1, 30, 30)
    return [
        padded[..., 1 - rows : 1 - rows + side_rows, 1 - cols : 1 - cols + side_cols]
        for rows, cols in TTA_SHIFTS
    ]


def mean_of_probabilities(member_log_probs: torch.Tensor) -> torch.Tensor:
    """(N, B, 10) log-probabilities -> (B, 10) log of the mean probability; (B, 10) as is."""
    if member_log_probs.dim() == 2:
        return member_log_probs
    n_members = member_log_probs.shape[0]
    # log(mean(exp)) without leaving log space: exact and stable for tiny probabilities.
    # logsumexp(x) = x_0 - log_softmax(x)_0, through ATen's softmax kernel (fixed by the
    # AVX2 pin) rather than torch.logsumexp's exp and log, which use MKL's vector math
    # and round differently on Intel and AMD CPUs (docs/reproducibility.md).
    log_sum_exp = member_log_probs[0] - torch.log_softmax(member_log_probs, dim=0)[0]
    return log_sum_exp - math.log(n_members)


def summed_member_losses(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The sum over members of loss(member's (B, 10) log-probabilities, labels).

    For one network's (B, 10) output it is just loss(outputs, labels), the same tensor,
    so a single network trains to the same bytes as before ensembles existed.
    """
    if outputs.dim() == 2:
        return loss(outputs, labels)
    return torch.stack([loss(member, labels) for member in outputs.unbind(0)]).sum()


def ensemble_size(model: nn.Module) -> int:
    """How many members a (possibly DDP-wrapped) model has: 1 for a single network."""
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    return len(model.members) if isinstance(model, Ensemble) else 1
