"""The student, distillation and Fisher pruning on generated data (a smoke test of the pipeline
and the properties each step relies on)."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cropworker_models import data, distill, net, prune, student  # noqa: E402

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def lite0_student() -> student.Student:
    return student.from_lite0().eval()


@pytest.mark.parametrize(
    ("backbone", "taps"),
    [("efficientnet-lite0", student.TAPS), ("efficientnet-lite1", (6, 14, 20))],
)
def test_student_starts_as_the_trunk_tapped_at_its_stage_ends(
    backbone: str, taps: tuple[int, ...]
) -> None:
    model = student.from_lite(student.CONFIG, backbone).eval()
    assert model.config.taps == taps  # the last blocks at strides 8, 16 and 32
    assert model.config.backbone == backbone.removeprefix("efficientnet-") + "-student"
    lite = net.build_backbone(net.SaliencyNetConfig(backbone=backbone))
    trunk = net.Trunk(lite, taps).eval()
    # The library pads each stride-2 convolution for its own training size (lite1: 240 px, where
    # the last stage reads an odd 15x15 map); the student pads as TensorFlow would at the size it
    # is given (even maps). Taps after a block where the two differ cannot match exactly.
    differs = [
        i
        for i, b in enumerate(lite._blocks)
        if b._depthwise_conv.stride[0] == 2
        and tuple(b._depthwise_conv.static_padding.padding)
        != student.same_pad(b._depthwise_conv.kernel_size[0], 2)
    ]
    exact = [t for t in taps if not any(i <= t for i in differs)]
    assert exact == (list(taps) if backbone.endswith("lite0") else list(taps[:2]))
    x = torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8)
    normalised = (x.permute(0, 3, 1, 2).float() / 255 - 0.498) / 0.502
    with torch.no_grad():
        expected = trunk(normalised)
        h = model.stem(torch.nn.functional.pad(normalised, student.same_pad(3, 2)))
        got = []
        for i, block in enumerate(model.blocks):
            h = block(h)
            if i in taps:
                got.append(h)
        stride = model.config.output_stride  # the readout takes the trunk's taps
        assert model(x).shape == (1, 96 // stride, 128 // stride)
    for tap, e, g in zip(taps, expected, got, strict=True):
        if tap in exact:
            assert torch.allclose(e, g, atol=1e-5)


def test_compact_keeps_the_function_and_drops_the_weights(lite0_student: student.Student) -> None:
    model = student.from_lite0().eval()
    generator = torch.Generator().manual_seed(0)
    for block in model.prunable():
        block.mask[torch.rand(block.spec.mid, generator=generator) < 0.6] = 0
    x = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    small = student.compact(model)
    with torch.no_grad():
        assert torch.allclose(model(x), small(x), atol=1e-4)
    assert prune.macs(small) < 0.6 * prune.macs(lite0_student)
    assert len(model.prunable()) == 16  # the 15 expanded blocks and the stem's maps (block 0)
    assert small.stem[0].out_channels == small.blocks[0].spec.mid < 32
    for block, spec in zip(small.prunable(), [b.spec for b in model.prunable()], strict=True):
        assert block.spec.mid < spec.mid
        assert block.depthwise.weight.shape[0] == block.spec.mid


@pytest.mark.parametrize("block", [0, 6])  # 0: the stem's maps, 6: a block's expanded maps
def test_macs_per_map_matches_the_measured_saving(
    lite0_student: student.Student, block: int
) -> None:
    cost = student.macs_per_map(lite0_student, *prune.served_shape(lite0_student))
    model = student.from_lite0()
    model.blocks[block].mask[:10] = 0
    saved = prune.macs(lite0_student) - prune.macs(student.compact(model))
    assert saved == 10 * cost[block]


def test_fisher_prefers_maps_that_do_not_matter() -> None:
    """A map whose activation is always zero has Δ = 0, and with β = 0 the map removed is one
    with the smallest Δ."""
    model = student.from_lite0()
    pruner = prune.FisherPruner(model, beta=0.0, multiple=1)
    dead = 7
    target = model.blocks[dead]
    with torch.no_grad():  # kill map 3 of block 7: zero depthwise weights and BN shift
        target.depthwise.weight[3] = 0
        target.bn.bias[3] = -10
    model.train()
    x = torch.randint(0, 256, (4, 64, 96, 3), dtype=torch.uint8)
    model(x).logsumexp(dim=(1, 2)).sum().backward()  # any loss that depends on every map
    pruner.accumulate(4)
    assert float(pruner.fisher[dead][3]) == 0.0
    assert float(pruner.fisher[dead].max()) > 0.0
    pruner.remove(1)
    removed = [
        (i, c) for i, b in pruner.blocks.items() for c in torch.nonzero(b.mask == 0).flatten()
    ]
    assert len(removed) == 1
    smallest = min(float(f.min()) for f in pruner.fisher.values())
    assert float(pruner.fisher[removed[0][0]][removed[0][1]]) == smallest == 0.0


@pytest.mark.parametrize("multiple", [1, 8])
def test_every_block_keeps_a_few_maps(multiple: int) -> None:
    model = student.from_lite0()
    pruner = prune.FisherPruner(model, beta=1.0, multiple=multiple)
    pruner.remove(100_000)
    assert all(int(b.mask.sum()) == max(prune.MIN_MAPS, multiple) for b in model.prunable())


def test_maps_go_a_group_at_a_time_so_widths_stay_multiples() -> None:
    """Groups of 8 from one block, the block whose smallest 8 Δs sum lowest (β = 0): here the
    block given 8 dead maps, although another block has the single smallest Δ."""
    model = student.from_lite0()
    pruner = prune.FisherPruner(model, beta=0.0, multiple=8)
    for i, fisher in pruner.fisher.items():
        fisher.copy_(torch.rand(fisher.shape, generator=torch.Generator().manual_seed(i)) + 1)
    pruner.fisher[5][:8] = 0.1
    pruner.fisher[9][3] = 0.0  # the smallest single Δ, in a block whose next 7 are ~1.5
    saved = pruner.remove(3)  # fewer than a group: still one whole group
    assert torch.equal(torch.nonzero(model.blocks[5].mask == 0).flatten(), torch.arange(8))
    assert saved == 8 * pruner.cost[5]
    pruner.remove(200)
    widths = [int(b.mask.sum()) for b in model.prunable()]
    assert all(w % 8 == 0 for w in widths)
    assert sum(b.spec.mid for b in model.prunable()) - sum(widths) == 8 + 200


def test_compact_keeps_a_first_block_without_a_skip_when_its_widths_meet() -> None:
    """Block 0 reads the stem's 32 maps and writes 16: pruned to exactly 16 input maps it must
    not become a residual block."""
    model = student.from_lite0().eval()
    assert not model.blocks[0].spec.skip
    model.blocks[0].mask[16:] = 0
    small = student.compact(model)
    assert small.blocks[0].spec.cin == small.blocks[0].spec.cout == 16
    assert not small.blocks[0].spec.skip
    x = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(x), small(x), atol=1e-4)


def test_a_compact_network_multiplies_by_no_masks() -> None:
    """Masks that keep every map cost a multiply per activation in the exported graph."""
    model = student.from_lite0()
    for block in model.prunable():
        block.mask[: block.spec.mid // 2] = 0
    small = student.compact(model)
    assert not any(block.masked for block in small.blocks)
    assert all(block.masked for block in prune.FisherPruner(small, beta=0.5).blocks.values())


def test_a_fractional_schedule_removes_a_share_of_the_live_maps() -> None:
    model = student.from_lite0()
    alive = sum(b.spec.mid for b in model.prunable())
    assert prune.removal_count(model, 16, 0.0) == 16
    assert prune.removal_count(model, 16, 0.02) == round(0.02 * alive)
    for block in model.prunable():
        block.mask[block.spec.mid // 2 :] = 0
    assert prune.removal_count(model, 16, 0.02) < round(0.011 * alive)
    for block in model.prunable():
        block.mask[1:] = 0
    assert prune.removal_count(model, 16, 0.02) == 1  # never stalls at zero


def _fixation_image(tmp: Path, i: int, rng: np.random.Generator) -> data.FixationImage:
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    path = tmp / f"{i}.jpg"
    cv2.imwrite(str(path), image)
    fix = rng.uniform([0, 0], [127.9, 95.9], (20, 2)).astype(np.float32)
    return data.FixationImage("synthetic", f"{i}.jpg", path, 128, 96, fix)


def test_distill_and_prune_end_to_end(tmp_path: Path) -> None:
    """A few distillation steps on generated images and targets, then Fisher pruning down to
    the first milestone: the curve has both points, the pruned network is cheaper and runs."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = student.from_lite0()
    examples = []
    for _ in range(8):
        h, w = 96 // 4, 128 // 4
        target = torch.from_numpy(rng.dirichlet(np.ones(h * w)).reshape(h, w)).half()
        image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        examples.append(distill.Example(image, target, torch.tensor([0, 5, h * w - 1])))
    with torch.no_grad():
        loss_before = float(distill.loss(model.eval(), examples[:4]))
    distill.fit(model, examples, steps=6, lr=1e-3, batch_size=4)
    with torch.no_grad():
        assert float(distill.loss(model.eval(), examples[:4])) < loss_before
    dev = [_fixation_image(tmp_path, i, rng) for i in range(3)]
    curve = prune.prune(
        model,
        examples,
        dev,
        tmp_path / "prune",
        beta=1.0,
        maps_per_prune=64,
        steps_between=1,
        lr=1e-4,
        floor_m=180,
        milestones_m=(185,),
    )
    assert len(curve) == 2
    assert curve[1]["macs"] <= 185e6 < curve[0]["macs"]
    pruned = student.load(Path(curve[1]["checkpoint"]))
    with torch.no_grad():
        logp = pruned(torch.from_numpy(examples[0].image[None]))
    assert torch.allclose(logp.exp().sum(), torch.tensor(1.0), atol=1e-4)
    chosen = prune.pick(curve, teacher_nss=curve[0]["nss"], target_macs=190e6)
    assert chosen["macs"] <= 190e6
    assert curve[1]["macs_shipped"] >= curve[1]["macs"]


def _tiny_examples(n: int, seed: int = 0) -> list[distill.Example]:
    rng = np.random.default_rng(seed)
    h, w = 64 // 4, 96 // 4
    return [
        distill.Example(
            rng.integers(0, 256, (64, 96, 3), dtype=np.uint8),
            torch.from_numpy(rng.dirichlet(np.ones(h * w)).reshape(h, w)).half(),
            torch.tensor([0, 5, h * w - 1]),
        )
        for _ in range(n)
    ]


def test_a_killed_distillation_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after 5 of 9 steps (checkpoints every 2), then resumed: the same weights as a run
    that was never stopped, and the checkpoint is gone once the run ends."""
    examples = _tiny_examples(6)  # 2 batches of 3 per pass: the kill falls inside a pass
    torch.manual_seed(0)
    straight = student.from_lite0()
    distill.fit(straight, examples, steps=9, lr=1e-3, batch_size=3)

    torch.manual_seed(0)
    model = student.from_lite0()
    checkpoint = tmp_path / "s.resume.pt"
    real_loss, calls = distill.loss, []

    def killed_at_step_6(model: torch.nn.Module, batch: list[distill.Example]) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real_loss(model, batch)

    monkeypatch.setattr(distill, "loss", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        distill.fit(model, examples, steps=9, lr=1e-3, batch_size=3, checkpoint=checkpoint, every=2)
    assert torch.load(checkpoint, weights_only=False)["step"] == 4
    monkeypatch.setattr(distill, "loss", real_loss)

    torch.manual_seed(1)  # a fresh process: nothing but the checkpoint carries the state over
    resumed = student.from_lite0()
    distill.fit(resumed, examples, steps=9, lr=1e-3, batch_size=3, checkpoint=checkpoint, every=2)
    assert not checkpoint.exists()
    pairs = zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    examples = _tiny_examples(3)
    checkpoint = tmp_path / "s.resume.pt"
    model = student.from_lite0()
    torch.save({"steps": 100}, checkpoint)
    with pytest.raises(ValueError, match="100-step run"):
        distill.fit(model, examples, steps=4, lr=1e-3, batch_size=3, checkpoint=checkpoint)


def test_pick_counts_the_cost_as_shipped() -> None:
    """A point under the target that widens to over it is not picked."""
    curve = [
        {"macs": 36.9e6, "macs_shipped": 41.8e6, "nss": 2.07},
        {"macs": 32.9e6, "macs_shipped": 35.7e6, "nss": 2.05},
    ]
    assert prune.pick(curve, teacher_nss=2.9, target_macs=37.3e6) is curve[1]


def test_widen_rounds_widths_up_without_changing_the_function() -> None:
    """A network pruned one map at a time (odd widths, stem at 16 = block 0's output) widened to
    multiples of 8: same outputs, and the new maps learn (their output weights get gradients)."""
    model = student.from_lite0()
    generator = torch.Generator().manual_seed(1)
    for block in model.prunable():
        block.mask[torch.rand(block.spec.mid, generator=generator) < 0.5] = 0
    model.blocks[0].mask[:] = 1
    model.blocks[0].mask[16:] = 0
    small = student.compact(model).eval()
    wide = student.widen(small, 8).eval()
    assert all(b.spec.mid % 8 == 0 for b in wide.prunable())
    pairs = list(zip(wide.prunable(), small.prunable(), strict=True))
    assert any(w.spec.mid > s.spec.mid for w, s in pairs)
    x = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(wide(x), small(x), atol=1e-5)
    wide.train()
    wide(x).logsumexp(dim=(1, 2)).sum().backward()
    grown = next((w, s) for w, s in pairs if w.spec.mid > s.spec.mid)
    project = grown[0].project[0].weight
    assert project.grad is not None and float(project.grad[:, grown[1].spec.mid :].abs().sum()) > 0


def test_reblur_changes_the_head_and_survives_a_save(tmp_path: Path) -> None:
    """`distill --blur` narrows an existing student's blur: the outputs change, the checkpoint
    keeps the new blur, and the loaded network computes what the reblurred one did."""
    model = student.reblur(student.from_lite0().eval(), 1.5)
    x = torch.randint(0, 256, (1, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        wide = model(x)
        narrow = student.reblur(model, 0.6)(x)
    assert not torch.allclose(wide, narrow, atol=1e-3)
    # a narrower blur keeps the peaks higher (a Gaussian blur never raises a maximum)
    assert float(narrow.max()) > float(wide.max())
    loaded = student.load(student.save(model, tmp_path / "s.pt"))
    assert loaded.config.blur_sigma == 0.6
    with torch.no_grad():
        assert torch.allclose(loaded(x), narrow, atol=1e-6)


def test_crop_windows_frame_the_scene_off_centre() -> None:
    """The augmentation's windows lie inside the image, keep 55-100% of each side, and put the
    image centre off their own centre (what teaches content over position)."""
    rng = random.Random(3)
    windows = distill.crop_windows(640, 480, 400, rng)
    shifts = []
    for x, y, w, h in windows:
        assert min(x, y) >= 0 and x + w <= 640 and y + h <= 480
        assert 0.55 * 640 - 1 <= w <= 640 and 0.55 * 480 - 1 <= h <= 480
        shifts.append(abs(x + w / 2 - 320) / w)
    assert max(shifts) > 0.25 and np.median(shifts) > 0.05


def test_views_are_the_image_and_its_windows_at_both_input_sizes() -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((300, 400, 3), 128, np.uint8))
    assert ok
    views = list(distill.views(jpeg.tobytes(), (192, 320), 2, random.Random(0)))
    assert [suffix for suffix, _, _ in views] == ["", "#crop0", "#crop1"]
    for _, small, big in views:
        assert max(small.shape[:2]) == 192 and max(big.shape[:2]) == 320
        assert small.shape[0] % 32 == 0 and small.shape[1] % 32 == 0
