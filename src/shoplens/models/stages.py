"""Coarse stages of a timm backbone, from input to output.

Freezing (``partial``, ``gradual``) and layer-wise learning-rate decay need the same ordered
split of a backbone into a handful of stages. We do not invent one per architecture: timm models
describe their own layout in ``group_matcher(coarse=True)``, the grouping timm's
``param_groups_layer_decay`` uses (with ``coarse=False``), and ``timm.models.group_parameters``
turns it into an ordered "parameter name -> stage" map. For example (``num_classes=0``):

* EfficientNet: ``conv_stem+bn1``, ``blocks.0`` ... ``blocks.6+conv_head+bn2``
  (timm merges the head conv into the last block stage);
* ResNet: ``conv1+bn1``, ``layer1`` ... ``layer4``;
* ViT: ``cls_token+pos_embed+patch_embed``, ``blocks.0`` ... ``blocks.11+norm``;
* ConvNeXt: ``stem``, ``stages.0`` ... ``stages.3``, ``head`` (its final norm).

Parameters no pattern matches (ConvNeXt's head norm, say) form one last stage, as in timm.
Models without ``group_matcher`` get one stage per top-level child that has parameters.
"""

from __future__ import annotations

from collections.abc import Iterator

from timm.models import group_parameters
from torch import nn


class BackboneStage(nn.Module):
    """A view on one stage of a backbone: it shares, never copies, the backbone's modules.

    ``stage.parameters()`` and ``stage.modules()`` reach exactly that stage's weights and
    layers (BatchNorm included), which is all freezing and optimizer grouping need. Do not
    assign a stage as an attribute of another module: it would register the backbone's
    weights a second time in that module's ``state_dict``.
    """

    def __init__(self, modules: dict[str, nn.Module], params: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.member_names: tuple[str, ...] = (*modules, *params)
        self.parts = nn.ModuleList(modules.values())
        for name, param in params.items():  # parameters held directly by a mixed parent
            self.register_parameter(name.replace(".", "__"), param)

    @property
    def name(self) -> str:
        return "+".join(self.member_names)

    def norm_layers(self) -> Iterator[nn.Module]:
        """The stage's BatchNorm layers (timm's BatchNormAct2d subclasses BatchNorm2d)."""
        return (m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def forward(self, *args: object) -> None:
        raise TypeError("a BackboneStage is a view for freezing and optimizer groups, not a layer")

    def extra_repr(self) -> str:
        return self.name


def stage_index_of_parameters(model: nn.Module, matcher: dict | None = None) -> dict[str, int]:
    """Map each parameter name of ``model`` to its stage number (0 = nearest the input).
    ``matcher``: a ``group_matcher(coarse=True)`` to use instead of the model's own (a timm
    ``features_only`` wrapper keeps the full model's parameter names, not its matcher)."""
    if matcher is None and hasattr(model, "group_matcher"):
        matcher = model.group_matcher(coarse=True)
    if matcher is not None:
        return group_parameters(model, matcher, reverse=True)
    index: dict[str, int] = {name: 0 for name, _ in model.named_parameters(recurse=False)}
    children = [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]
    for stage, (child_name, child) in enumerate(children):
        index.update({f"{child_name}.{n}": stage for n, _ in child.named_parameters()})
    return index


def backbone_stages(model: nn.Module, matcher: dict | None = None) -> list[BackboneStage]:
    """The ordered coarse stages of ``model`` (see the module doc), input side first.

    Each stage holds the largest submodules whose parameters all belong to it, so a stage's
    ``modules()`` also reaches its BatchNorm running statistics. ``matcher``: as in
    :func:`stage_index_of_parameters`.
    """
    stage_of = stage_index_of_parameters(model, matcher)
    count = max(stage_of.values()) + 1
    modules: list[dict[str, nn.Module]] = [{} for _ in range(count)]
    params: list[dict[str, nn.Parameter]] = [{} for _ in range(count)]

    def visit(prefix: str, module: nn.Module) -> None:
        for name, param in module.named_parameters(recurse=False):
            params[stage_of[prefix + name]][prefix + name] = param
        for child_name, child in module.named_children():
            path = prefix + child_name
            owners = {stage_of[f"{path}.{n}"] for n, _ in child.named_parameters()}
            if len(owners) == 1:
                modules[owners.pop()][path] = child
            elif owners:
                visit(path + ".", child)

    visit("", model)
    return [BackboneStage(m, p) for m, p in zip(modules, params, strict=True) if m or p]
