"""Model shapes for every input configuration, parameter counts and config validation."""

import copy

import pytest
import torch

from helpers.models import LeNet5Config, NarrowBatchNorm2d, batch_norm, build_model, count_parameters, spec_of


@pytest.mark.parametrize("arch", ["lenet5", "reference_cnn"])
@pytest.mark.parametrize("channels, size, classes", [(1, 28, 10), (3, 28, 10), (1, 64, 3), (1, 32, 3)])
def test_output_shape_for_every_input_configuration(arch: str, channels: int, size: int, classes: int) -> None:
    model = build_model(arch, in_channels=channels, image_size=size, num_classes=classes)
    out = model(torch.zeros(5, channels, size, size))
    assert out.shape == (5, classes)


def test_classic_lenet5_has_the_textbook_parameter_count() -> None:
    # conv 6@5x5 (156) + conv 16@5x5 (2,416) + 400-120 (48,120) + 120-84 (10,164) + 84-10 (850)
    assert count_parameters(build_model()) == 61_706


@pytest.mark.parametrize("options", [
    dict(conv_channels=(6, 16, 32)),          # extra conv layer
    dict(dense_units=(256, 128, 64)),         # extra dense layer
    dict(batchnorm=True, dropout=0.5),
    dict(activation="tanh", pool="avg"),      # LeCun 1998 style
    dict(conv_channels=(32, 64), dense_units=(512, 256)),
])
def test_variants_build_and_run(options: dict) -> None:
    model = build_model(in_channels=3, **options)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert spec_of(model).config["conv_channels"] == tuple(options.get("conv_channels", (6, 16)))


def test_wider_models_have_more_parameters() -> None:
    small = count_parameters(build_model(dense_units=(16, 8)))
    large = count_parameters(build_model(dense_units=(1024, 512)))
    assert large > 10 * small


def test_same_seed_gives_same_initial_weights() -> None:
    a, b, c = build_model(seed=1), build_model(seed=1), build_model(seed=2)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


@pytest.mark.parametrize("bad", [
    dict(activation="sigmoidish"), dict(pool="median"), dict(dropout=1.0), dict(conv_channels=(6,)),
    dict(image_size=8),
])
def test_invalid_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        LeNet5Config(**bad)


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet1000")


def test_layer_table_lists_every_layer_and_adds_up_to_the_parameter_count() -> None:
    from helpers.models import build_model, count_parameters, layer_table

    model = build_model(in_channels=3, image_size=28, num_classes=10)
    table = layer_table(model, channels=3, size=28)
    assert table["parameters"].sum() == count_parameters(model) == 62_006
    assert table.loc["features.0", "output shape"] == "6 × 28 × 28" and table.loc["classifier.5", "output shape"] == "10"
    assert model.training  # the probe leaves the model's mode as it was


def test_max_pool_before_relu_gives_the_numbers_of_relu_before_max_pool() -> None:
    """The LeNet block pools before its ReLU (4x fewer values to rectify); outputs and gradients stay exact."""
    torch.manual_seed(0)
    model = build_model(seed=0, conv_channels=(12, 32), batchnorm=True, in_channels=3)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:4] == ["Conv2d", "NarrowBatchNorm2d", "MaxPool2d", "ReLU"]
    textbook_order = copy.deepcopy(model)
    layers = list(textbook_order.features)
    for i in (2, 6):  # ReLU back in front of each max-pool
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    textbook_order.features = torch.nn.Sequential(*layers)
    x = torch.randn(16, 3, 28, 28)
    outs = []
    for m in (model, textbook_order):
        torch.manual_seed(1)  # the same dropout masks
        out = m(x)
        out.square().sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))


def test_narrow_batch_norm_runs_on_nchw_and_normalises_as_batch_norm_does() -> None:
    """Below 16 channels BatchNorm takes NCHW input (channels-last's CPU backward is 10-20x slower there)."""
    assert isinstance(batch_norm(12), NarrowBatchNorm2d) and type(batch_norm(16)) is torch.nn.BatchNorm2d
    torch.manual_seed(0)
    x = torch.randn(8, 12, 20, 20).contiguous(memory_format=torch.channels_last)
    narrow, plain = batch_norm(12), torch.nn.BatchNorm2d(12)
    a, b = narrow(x), plain(x)
    assert a.is_contiguous(memory_format=torch.channels_last)  # back to the layout the max-pool after it is fast on
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(narrow.running_mean, plain.running_mean)
    nchw = torch.randn(8, 12, 20, 20)
    assert narrow(nchw).is_contiguous()  # a model not in channels-last stays as it is


def test_narrow_batch_norm_hands_channels_last_on_without_changing_a_bit_of_training() -> None:
    """Channels-last out (fast max-pool), NCHW gradient in (fast BatchNorm backward): weights bit-identical."""
    from helpers.reporting.bench import nchw_out_batch_norm

    weights = []
    for swap in (False, True):
        model = build_model(seed=0, conv_channels=(12, 64), dense_units=(320, 96), batchnorm=True, in_channels=3)
        if swap:  # as it first was: NCHW out, the max-pool after it on NCHW
            model = nchw_out_batch_norm(model)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen, _ = torch.Generator().manual_seed(0), torch.manual_seed(0)  # the same batches and dropout masks
        for _ in range(3):
            x = torch.randn(32, 3, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (32,), generator=gen)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append(torch.cat([v.detach().float().flatten() for v in model.state_dict().values()]))
    assert torch.equal(weights[0], weights[1])
