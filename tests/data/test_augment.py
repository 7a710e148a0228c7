"""Batched augmentation: crops and flips against windows worked out by hand, normalisation numbers,
independent and deterministic draws, the ``[augment]`` table, and the cost of a large batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lifelong.config import load_config
from lifelong.data.augment import PRESETS, Augment, resolved_config
from lifelong.data.files import fashion_mnist
from lifelong.errors import ConfigError, DataError
from lifelong.experiment import resolve_config

# A 1x4x4 image of distinct non-zero values, so that a 0 in an output can only be padding.
IMAGE = torch.tensor([[[[1., 2., 3., 4.],
                        [5., 6., 7., 8.],
                        [9., 10., 11., 12.],
                        [13., 14., 15., 16.]]]])  # (1, 1, 4, 4)
# The same image padded by one pixel of zeros (6x6), written out by hand.
PADDED = torch.tensor([[0., 0., 0., 0., 0., 0.],
                       [0., 1., 2., 3., 4., 0.],
                       [0., 5., 6., 7., 8., 0.],
                       [0., 9., 10., 11., 12., 0.],
                       [0., 13., 14., 15., 16., 0.],
                       [0., 0., 0., 0., 0., 0.]])
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_every_crop_offset_and_flip_gives_its_window_of_the_zero_padded_image() -> None:
    augment = Augment(crop_padding=1, flip=True)
    draws = torch.tensor([[row, column, flip] for row in range(3) for column in range(3) for flip in (0, 1)])
    out = augment.apply(IMAGE.expand(18, 1, 4, 4), draws)  # (18, 1, 4, 4)
    for (row, column, flip), image in zip(draws.tolist(), out):
        window = PADDED[row:row + 4, column:column + 4]
        assert torch.equal(image[0], window.flip(1) if flip else window), (row, column, flip)
    # Two of them in full: offset (0, 0) shows the top and left padding; offset (2, 1) flipped is the
    # window one row down, unshifted sideways, mirrored, with the bottom padding row last.
    assert torch.equal(out[0, 0], torch.tensor([[0., 0., 0., 0.], [0., 1., 2., 3.], [0., 5., 6., 7.],
                                                [0., 9., 10., 11.]]))
    assert torch.equal(out[15, 0], torch.tensor([[8., 7., 6., 5.], [12., 11., 10., 9.], [16., 15., 14., 13.],
                                                 [0., 0., 0., 0.]]))


def test_flip_alone_mirrors_columns_and_offset_centre_is_the_image_itself() -> None:
    flip_only = Augment(flip=True)
    out = flip_only.apply(IMAGE.expand(2, 1, 4, 4), torch.tensor([[0, 0, 0], [0, 0, 1]]))
    assert torch.equal(out[0], IMAGE[0])
    assert torch.equal(out[1, 0], torch.tensor([[4., 3., 2., 1.], [8., 7., 6., 5.], [12., 11., 10., 9.],
                                                [16., 15., 14., 13.]]))
    assert torch.equal(Augment(crop_padding=1).apply(IMAGE, torch.tensor([[1, 1, 0]])), IMAGE)


def test_every_channel_gets_the_same_crop_and_flip() -> None:
    image = torch.stack([IMAGE[0, 0], 10 * IMAGE[0, 0], -IMAGE[0, 0]])[None]  # (1, 3, 4, 4)
    out = Augment(crop_padding=1, flip=True).apply(image, torch.tensor([[2, 0, 1]]))
    expected = PADDED[2:6, 0:4].flip(1)
    assert torch.equal(out[0], torch.stack([expected, 10 * expected, -expected]))


def test_normalisation_by_hand() -> None:
    augment = Augment(mean=[0.25, 0.5], std=[0.5, 0.25])
    x = torch.tensor([0.5, 1.0]).reshape(1, 2, 1, 1).expand(3, 2, 2, 2)  # channel 0 all 0.5, channel 1 all 1.0
    out = augment.normalize(x)
    # (0.5 - 0.25) / 0.5 = 0.5 and (1.0 - 0.5) / 0.25 = 2.0.
    assert torch.equal(out[:, 0], torch.full((3, 2, 2), 0.5))
    assert torch.equal(out[:, 1], torch.full((3, 2, 2), 2.0))
    assert Augment().normalize(x) is x


def test_black_padding_of_normalised_images_is_minus_mean_over_std() -> None:
    augment = Augment(crop_padding=1, mean=[0.25, 0.5], std=[0.5, 0.25])
    # Black is (0 - 0.25) / 0.5 = -0.5 in channel 0 and (0 - 0.5) / 0.25 = -2.0 in channel 1.
    assert torch.equal(augment.black(torch.zeros(1, 2, 3, 3)).flatten(), torch.tensor([-0.5, -2.0]))
    out = augment.apply(torch.ones(1, 2, 2, 2), torch.tensor([[0, 0, 0]]))  # shifted down and right by one
    assert torch.equal(out[0, 0], torch.tensor([[-0.5, -0.5], [-0.5, 1.0]]))
    assert torch.equal(out[0, 1], torch.tensor([[-2.0, -2.0], [-2.0, 1.0]]))


def test_normalise_then_crop_equals_torchvision_order_crop_then_normalise() -> None:
    # torchvision (Mammoth, PyCIL) crops raw pixels with zero padding, then normalises; normalising
    # first and padding with normalised black must give the same floats, bit for bit.
    augment = PRESETS["cifar10"]
    raw_pixels_only = Augment(crop_padding=augment.crop_padding, flip=augment.flip)
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, C, H, W) in [0, 1]
    draws = augment.draw(32, torch.Generator().manual_seed(1))
    assert torch.equal(augment.apply(augment.normalize(x), draws), augment.normalize(raw_pixels_only.apply(x, draws)))


def test_shape_and_dtype_are_kept() -> None:
    generator = torch.Generator().manual_seed(0)
    for augment, dtypes in ((PRESETS["cifar10"], (torch.float32, torch.float64, torch.bfloat16)),
                            (Augment(crop_padding=4, flip=True), (torch.float32, torch.uint8))):
        for dtype in dtypes:
            x = (torch.rand(5, 3, 32, 24) * 200).to(dtype)
            out = augment(x, generator)
            assert out.shape == (5, 3, 32, 24) and out.dtype == dtype
    assert PRESETS["cifar10"].normalize(torch.rand(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64
    assert PRESETS["cifar10"].normalize(torch.ones(2, 3, 8, 8, dtype=torch.uint8)).dtype == torch.float32
    with pytest.raises(DataError, match=r"^augment: images normalised with augment\.mean must be floating point"):
        PRESETS["cifar10"](torch.ones(2, 3, 8, 8, dtype=torch.uint8), generator)


def test_samples_of_a_batch_get_independent_draws() -> None:
    # 256 copies of one image with padding 4 and flips: 9 * 9 * 2 = 162 equally likely outcomes.
    # Expected distinct outcomes: 162 * (1 - (161/162)^256) = 128.6 (standard deviation about 4), so
    # more than 100 fails only if the draws are shared between samples.
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(1, 3, 8, 8) + 1
    out = Augment(crop_padding=4, flip=True)(image.expand(256, 3, 8, 8), torch.Generator().manual_seed(1))
    assert len(torch.unique(out.reshape(256, -1), dim=0)) > 100


def test_flip_rate_is_one_half() -> None:
    # The flipped copies of [1, 2] read [2, 1]. Over n = 10,000 samples the count is Binomial(n, 1/2):
    # mean 5,000, standard deviation sqrt(n / 4) = 50; five deviations (4,750..5,250) fail with
    # probability below 1e-6.
    x = torch.tensor([1., 2.]).reshape(1, 1, 1, 2).expand(10_000, 1, 1, 2)
    out = Augment(flip=True)(x, torch.Generator().manual_seed(2))
    flipped = int((out[:, 0, 0, 0] == 2).sum())
    assert 4_750 <= flipped <= 5_250
    # Each of the 3 row offsets of padding 1 has probability 1/3: over 9,000 draws, mean 3,000 and
    # standard deviation sqrt(9,000 * 1/3 * 2/3) = 44.7; five deviations is 2,776..3,224.
    rows = Augment(crop_padding=1, flip=True).draw(9_000, torch.Generator().manual_seed(3))[:, 0]
    assert all(2_776 <= count <= 3_224 for count in torch.bincount(rows, minlength=3).tolist())


def test_same_seed_same_output_other_seed_other_output() -> None:
    augment = PRESETS["cifar10"]
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = augment(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(8)))


def test_a_batch_equals_its_parts_augmented_in_order() -> None:
    # The contract: each sample takes one draw, in batch order, so splitting a batch anywhere and
    # augmenting the parts with the generator continuing gives the same images and leaves the
    # generator in the same state.
    augment = PRESETS["cifar100"]
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    whole_generator = torch.Generator().manual_seed(5)
    whole = augment(x, whole_generator)
    for split in (1, 3, 4):
        generator = torch.Generator().manual_seed(5)
        parts = torch.cat([augment(x[:split], generator), augment(x[split:], generator)])
        assert torch.equal(parts, whole)
        assert torch.equal(generator.get_state(), whole_generator.get_state())


def test_augmentation_off_returns_the_batch_and_draws_nothing() -> None:
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    flat = torch.rand(4, 10)
    assert Augment()(flat, generator) is flat
    assert torch.equal(generator.get_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_batch_gives_the_cpu_result() -> None:
    augment = PRESETS["cifar10"]
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    on_cpu = augment.normalize(augment(x, torch.Generator().manual_seed(4)))
    on_gpu = augment.normalize(augment(x.cuda(), torch.Generator().manual_seed(4)))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-6)


def test_inputs_that_are_not_images_are_refused_with_the_field() -> None:
    generator = torch.Generator()
    with pytest.raises(ConfigError, match=r"^augment\.crop_padding: .*\(B, C, H, W\).*\(4, 10\)"):
        Augment(crop_padding=2)(torch.rand(4, 10), generator)
    with pytest.raises(ConfigError, match=r"^augment\.flip: "):
        Augment(flip=True)(torch.rand(4, 8, 8), generator)
    with pytest.raises(ConfigError, match=r"^augment\.mean: per-channel normalisation need images"):
        Augment(mean=[0.5], std=[0.5]).normalize(torch.rand(4, 10))
    with pytest.raises(ConfigError, match=r"^augment\.mean: has 3 values but the images have 1 channels"):
        PRESETS["cifar10"].normalize(torch.rand(4, 1, 28, 28))
    with pytest.raises(DataError, match=r"offsets in \[0, 2\]"):
        Augment(crop_padding=1).apply(IMAGE, torch.tensor([[3, 0, 0]]))


@pytest.mark.parametrize(("settings", "message"), [
    ({"crop_padding": -1}, r"augment\.crop_padding: must be an integer >= 0 .*got -1"),
    ({"crop_padding": 2.5}, r"augment\.crop_padding: .*got 2\.5"),
    ({"crop_padding": True}, r"augment\.crop_padding: .*got True"),
    ({"flip": 1}, r"augment\.flip: must be true or false, got 1"),
    ({"mean": [0.5], "std": []}, r"augment\.std: needs one value per channel like augment\.mean \(1\), got 0"),
    ({"mean": [0.5], "std": [0.0]}, r"augment\.std: every value must be > 0, got \[0\.0\]"),
    ({"mean": [float("nan")], "std": [1.0]}, r"augment\.mean: must be a list of finite numbers"),
    ({"mean": "0.5", "std": [1.0]}, r"augment\.mean: must be a list of finite numbers"),
])
def test_bad_settings_are_one_line_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        Augment(**settings)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


def test_the_default_configuration_augments_nothing() -> None:
    config = load_config(None, [])
    augment = Augment.from_config(config.augment)
    assert augment == Augment() and not augment.augments and augment.mean == ()
    assert config.augment.replay is True


def test_augment_table_parses_from_toml_and_set_overrides(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('[dataset]\nname = "cifar10"\n\n[augment]\npreset = "cifar10"\nreplay = false\n')
    config = load_config(str(file), [])
    assert Augment.from_config(config.augment) == PRESETS["cifar10"]
    assert config.augment.replay is False
    # A field given replaces the preset's and keeps the rest of it.
    overridden = Augment.from_config(load_config(str(file), ["augment.crop_padding=0", "augment.mean=[0.5, 0.5, 0.5]",
                                                             "augment.std=[0.25, 0.25, 0.25]"]).augment)
    assert overridden == Augment(crop_padding=0, flip=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Augment.from_config(load_config(None, ["augment.crop_padding=4", "augment.flip=true"]).augment) \
        == Augment(crop_padding=4, flip=True)


def test_bad_augment_table_values_name_the_field() -> None:
    for override, message in (("augment.flip=maybe", r"^augment\.flip: "),
                              ("augment.crop_padding=[1]", r"^augment\.crop_padding: "),
                              ("augment.colour=1", r"^augment\.colour: unknown field; allowed: preset, crop_padding, flip, mean, std, replay$")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    with pytest.raises(ConfigError, match=r"^augment\.crop_padding: must be an integer >= 0 .*got -1$"):
        Augment.from_config(load_config(None, ["augment.crop_padding=-1"]).augment)
    with pytest.raises(ConfigError, match=r"^augment\.preset: unknown preset 'cifar'; allowed: cifar10, cifar100, "
                                          r"fashion_mnist, mnist, none$"):
        Augment.from_config(load_config(None, ["augment.preset=cifar"]).augment)


def test_the_stored_configuration_spells_out_the_preset() -> None:
    config = load_config(None, ["augment.preset=mnist", "augment.crop_padding=0"])
    assert resolved_config(config.augment).model_dump() == {
        "preset": "mnist", "crop_padding": 0, "flip": False, "mean": [0.1307], "std": [0.3081], "replay": True}
    assert resolve_config(config)["augment"]["mean"] == [0.1307]


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_preset_normalises_its_training_set_to_mean_0_and_std_1() -> None:
    augment = PRESETS["fashion_mnist"]
    x = augment.normalize(fashion_mnist(str(FASHION_MNIST)).x_train)  # (60000, 1, 28, 28)
    # The preset's 0.2860 and 0.3530 are the measured 0.28604 and 0.35302 rounded to 4 places, so the
    # normalised set is within 0.0001 / 0.353 = 3e-4 of mean 0 and 0.0002 / 0.353 = 6e-4 of std 1.
    assert abs(float(x.mean())) < 3e-4
    assert abs(float(x.std()) - 1) < 6e-4


class _CountTorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_the_work_does_not_grow_with_the_batch_in_python() -> None:
    # A per-sample loop would call torch at least once more per image; batched code calls it the same
    # number of times for 2 images as for 300.
    augment = PRESETS["cifar10"]
    counts = []
    for batch in (2, 300):
        x = torch.rand(batch, 3, 32, 32)
        with _CountTorchCalls() as counter:
            augment.normalize(augment(x, torch.Generator().manual_seed(0)))
        counts.append(counter.calls)
    assert counts[0] == counts[1] > 0
