"""The reduced ResNet-18 and the CIFAR ResNet-32: layout, shortcut, norms, memory formats, precision,
and training through ``lifelong.train``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lifelong as ll
from lifelong.cli import main
from lifelong.config import Component, build
from lifelong.errors import ConfigError
from lifelong.models import MODELS, split_model
from lifelong.models.ghost_batch_norm import GhostBatchNorm2d
from lifelong.models.norms import NORMS, norm_layer
from lifelong.models.resnet import ZeroPadShortcut, resnet18, resnet32


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_output_and_feature_shapes(shape: tuple[int, int, int]) -> None:
    x = torch.randn(2, *shape)
    for model, features in ((resnet18(shape, 10), 160), (resnet18(shape, 10, nf=64), 512), (resnet32(shape, 10), 64)):
        assert model(x).shape == (2, 10)
        backbone, head = split_model(model)
        assert backbone(x).shape == (2, features) and head.in_features == features == model.feature_dim
    # a 3x3 stride-2 convolution with padding 1 maps n to ceil(n / 2): 28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4
    stages = resnet18(shape, 10, nf=4).backbone
    h = stages.stage1(stages.stem(x))
    sizes = [h.shape[2:]]
    for stage in (stages.stage2, stages.stage3, stages.stage4):
        h = stage(h)
        sizes.append(h.shape[2:])
    side = shape[1]
    assert sizes == [(side, side), (side // 2,) * 2, (side // 4,) * 2, ((side // 4 + 1) // 2,) * 2]


def test_parameter_counts_match_the_reference_layouts() -> None:
    # resnet32 on 3x32x32, 10 classes (convolutions without bias, batch norm: 2 parameters per channel)
    #   stem 3*16*9 + 2*16                                                    =     464
    #   stage 1: 5 blocks of 2 * 16*16*9 + 2 * 2*16                           =  23,360
    #   stage 2: 16*32*9 + 32*32*9 + 2*2*32, then 4 of 2 * 32*32*9 + 2*2*32   =  88,192
    #   stage 3: 32*64*9 + 64*64*9 + 2*2*64, then 4 of 2 * 64*64*9 + 2*2*64   = 351,488
    #   option-A shortcuts: 0; head 64*10 + 10                                =     650
    # total 464,154: PyCIL's convs/cifar_resnet.py resnet32() has 463,504 plus its 650-parameter fc
    assert parameter_count(resnet32((3, 32, 32), 10)) == 464_154
    assert parameter_count(resnet32((1, 28, 28), 10)) == 464_154 - 2 * 16 * 9  # the stem sees 1 channel, not 3
    # resnet18, nf = 20, on 3x32x32, 10 classes
    #   stem 3*20*9 + 2*20                                                                =       580
    #   stage 1: 2 blocks of 2 * 20*20*9 + 2*2*20                                         =    14,560
    #   stage 2: 20*40*9 + 40*40*9 + 2*2*40 + shortcut 20*40 + 2*40, then 2*40*40*9 + 2*2*40 =  51,600
    #   stage 3: 40*80*9 + 80*80*9 + 2*2*80 + 40*80 + 2*80, then 2*80*80*9 + 2*2*80       =   205,600
    #   stage 4: 80*160*9 + 160*160*9 + 2*2*160 + 80*160 + 2*160, then 2*160*160*9 + 4*160 =  820,800
    #   head 160*10 + 10                                                                  =     1,610
    # total 1,094,750, the count of Mammoth's backbone/ResNetBlock.py resnet18(10, 20) (its reduced-resnet18)
    assert parameter_count(resnet18((3, 32, 32), 10)) == 1_094_750
    assert parameter_count(resnet18((3, 32, 32), 10, nf=64)) == 11_173_962  # Mammoth's resnet18(10, 64)


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels() -> None:
    shortcut = ZeroPadShortcut(extra_channels=2, stride=2)
    x = torch.arange(32.0).reshape(1, 2, 4, 4)  # channel 0 holds 0..15, channel 1 holds 16..31, row-major
    out = shortcut(x)
    assert parameter_count(shortcut) == 0 and out.shape == (1, 4, 2, 2)
    assert out[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]  # rows 0 and 2, columns 0 and 2
    assert out[0, 1].tolist() == [[16.0, 18.0], [24.0, 26.0]]
    assert out[0, 2:].abs().sum() == 0
    model = resnet32((3, 32, 32), 10)
    assert sum(isinstance(m, ZeroPadShortcut) for m in model.modules()) == 2  # entering stages 2 and 3
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_group_norm_takes_the_largest_divisor_not_above_the_groups_asked() -> None:
    assert norm_layer("group", 20, groups=8).num_groups == 5  # 20 = 5 * 4; 8, 7 and 6 do not divide it
    assert norm_layer("group", 160, groups=8).num_groups == 8
    assert norm_layer("group", 7, groups=8).num_groups == 7
    assert norm_layer("layer", 64).num_groups == 1


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("factory", [resnet18, resnet32])
def test_every_norm_trains_a_step(factory, norm: str) -> None:
    torch.manual_seed(0)
    model = factory((1, 12, 12), 3, norm=norm, **({"nf": 4} if factory is resnet18 else {}))
    x, y = torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = F.cross_entropy(model(x), y)
    before.backward()
    optimizer.step()
    assert F.cross_entropy(model(x), y) < before  # a small gradient step on the same batch lowers its loss


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_sample_norms_give_the_same_output_in_train_and_eval_mode_for_one_sample(norm: str) -> None:
    model = resnet18((3, 16, 16), 4, nf=4, norm=norm)
    batch = torch.randn(5, 3, 16, 16)
    alone = model.train()(batch[:1])
    assert torch.allclose(model.eval()(batch[:1]), alone, atol=1e-6)
    assert torch.allclose(model.train()(batch)[:1], alone, atol=1e-5)  # the rest of the batch plays no part


def test_ghost_batch_norm_2d_normalizes_each_virtual_batch_over_its_samples_and_positions() -> None:
    norm = GhostBatchNorm2d(1, virtual_batch_size=2)
    x = torch.tensor([[0.0, 2.0], [0.0, 2.0], [10.0, 14.0], [14.0, 10.0]]).reshape(4, 1, 1, 2)
    # virtual batch 1 holds 0, 2, 0, 2: mean 1, variance 1; virtual batch 2 holds 10, 14, 14, 10: mean 12, variance 4
    # (normalizing each position alone would divide by a variance of 0 in virtual batch 1)
    out = norm(x).reshape(4, 2)
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]]), atol=1e-4)
    # running statistics updated once per virtual batch, the variance unbiased over 4 values:
    # mean 0.9 * (0.1 * 1) + 0.1 * 12 = 1.29; variance 0.9 * (0.9 + 0.1 * 4/3) + 0.1 * 16/3 = 1.4633...
    assert torch.allclose(norm.running_mean, torch.tensor([1.29]))
    assert torch.allclose(norm.running_var, torch.tensor([0.9 * (0.9 + 0.4 / 3) + 1.6 / 3]))


def test_without_norm_every_block_starts_as_its_shortcut() -> None:
    model = resnet32((3, 32, 32), 10, norm="none")
    x = torch.randn(2, 3, 32, 32)
    stem = model.backbone.stem(x)  # (2, 16, 32, 32), after a ReLU so the blocks' final ReLU keeps it
    # identity blocks pass it on; the two option-A shortcuts keep every 2nd row and column and append zeros
    expected = torch.cat([stem[:, :, ::4, ::4].mean(dim=(2, 3)), torch.zeros(2, 48)], dim=1)
    assert torch.allclose(model.backbone(x), expected, atol=1e-6)


def test_bad_settings_raise_config_errors_naming_the_field(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"model\.norm must be one of \['adab2n', 'batch', 'ghost', 'group', 'layer', "
                                          r"'none', 'ws_bcn'\], got 'instance'"):
        resnet32((3, 32, 32), 10, norm="instance")
    with pytest.raises(ConfigError, match=r"model.name='resnet18' needs image inputs \(C, H, W\), got shape \(784,\)"):
        resnet18((784,), 10)
    with pytest.raises(ConfigError, match="model.nf"):
        resnet18((1, 28, 28), 10, nf=0)
    with pytest.raises(ConfigError, match="model.norm_groups"):
        resnet32((1, 28, 28), 10, norm="group", norm_groups=0)
    with pytest.raises(ConfigError, match="model.norm must be one of"):  # through the configuration registry
        build("model", MODELS, Component(name="resnet18", norm="instance"), (1, 28, 28), 10,
              skip=("input_shape", "n_classes"))
    built = build("model", MODELS, Component(name="resnet18", nf=6, norm="layer"), (1, 28, 28), 10,
                  skip=("input_shape", "n_classes"))
    assert built.feature_dim == 48
    assert main(["run", "--db", str(tmp_path / "runs.db"), "--set", "model.name=resnet32",
                 "--set", "model.norm=instance"]) == 2
    assert capsys.readouterr().err.strip() == ("error: model.norm must be one of ['adab2n', 'batch', 'ghost', "
                                               "'group', 'layer', 'none', 'ws_bcn'], got 'instance'")


@pytest.mark.parametrize("factory", [resnet18, resnet32])
def test_channels_last_gives_the_same_output_as_contiguous(factory) -> None:
    torch.manual_seed(0)
    model, x = factory((3, 32, 32), 10), torch.randn(4, 3, 32, 32)
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_last = x.to(memory_format=torch.channels_last)
    assert last.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    # eval first: a training pass updates the running statistics
    assert torch.allclose(last.eval()(x_last), model.eval()(x), atol=1e-4)
    assert torch.allclose(last.train()(x_last), model.train()(x), atol=1e-4)


@pytest.mark.parametrize("factory", [resnet18, resnet32])
def test_bf16_autocast_forward_is_close_to_fp32(factory) -> None:
    torch.manual_seed(0)
    model, x = factory((1, 28, 28), 10).eval(), torch.randn(4, 1, 28, 28)
    expected = model(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits (relative error 2^-9 per rounding); through 17 or 33 layers a few percent
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()


def square_images(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: noise; class 1: noise with a bright 6x6 square somewhere; 1x28x28 images."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2 * n_per_class, 1, 28, 28, generator=generator)
    corners = torch.randint(0, 28 - 6, (n_per_class, 2), generator=generator)
    for image, (row, column) in zip(x[n_per_class:], corners.tolist()):
        image[:, row:row + 6, column:column + 6] += 2.0
    return x, torch.arange(2).repeat_interleave(n_per_class)


def square_stream() -> ll.Stream:
    x_train, y_train = square_images(24, seed=0)
    x_test, y_test = square_images(20, seed=1)
    return ll.class_incremental(ll.from_arrays("squares", x_train, y_train, x_test, y_test), n_experiences=1)


def test_resnet18_learns_bright_squares_through_train_and_ncm_uses_its_backbone() -> None:
    stream = square_stream()
    torch.manual_seed(0)
    result = ll.train(stream, resnet18(stream.input_shape, stream.n_classes, nf=8), ll.Naive(),
                      ll.OptimConfig(epochs=3, batch_size=8, lr=0.05), seed=0)
    assert result.matrix[0, 0] >= 0.9  # chance is 0.5 on the 40 test images
    torch.manual_seed(0)
    model, strategy = resnet18(stream.input_shape, stream.n_classes, nf=8), ll.NCM(adapt_experiences=1)
    result = ll.train(stream, model, strategy, ll.OptimConfig(epochs=3, batch_size=8, lr=0.05), seed=0)
    assert strategy.statistics.means().shape == (2, 64)  # one mean of the 8 * 8 features per class
    assert result.matrix[0, 0] >= 0.9
