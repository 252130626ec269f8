"""Tests for core/shapes/embedded.py: tokenizer, processor, batches, and that training lowers the loss."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

import core.shapes.embedded as embedded
from core.shapes.embedded import (IMAGE_TOKEN, EmbeddedConfig, answer_token_ids, build_model, build_processor,
                                  build_tokenizer, collate, image_seq_length, joint_classes, joint_labels,
                                  language_stages, length_groups, main, oppose_answer_rows, own_corrections,
                                  patch_labels, patch_order_labels, per_example_loss, pretrain_vision, stage_named,
                                  train, training_batch, training_loss_backward, training_scene)
from core.shapes.metrics import parse_objects
from core.shapes.texts import Example, mention_order
from core.shapes.world import COLORS, PRIOR_PAIRS, SHAPES, Scene, make_scene, object_mask, render

TINY = dict(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2, text_heads=4,
            text_intermediate=128)


def test_tokenizer_handles_any_text_and_round_trips():
    tok = build_tokenizer()
    for text in ["A large yellow star is on the left.", "Ünïcödé 🙂 and unseen words: zebra!"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.tokenize(" yellow") == ["Ġyellow"]  # world words are single tokens
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) != tok.unk_token_id


def test_processor_expands_image_token_like_llava():
    cfg = EmbeddedConfig(**TINY)
    processor = build_processor(build_tokenizer(), cfg)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                        {"type": "text", "text": "Hi"}]}],
                                           add_generation_prompt=True)
    assert prompt == "<s>USER: <image>\nHi ASSISTANT:"
    inputs = processor(text=[prompt], images=[render(make_scene(0))], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((inputs["input_ids"] == image_id).sum()) == image_seq_length(processor) == 64
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 96, 96)


def test_collate_masks_prompt_and_keeps_answer():
    cfg = EmbeddedConfig(**TINY)
    processor = build_processor(build_tokenizer(), cfg)
    tok = processor.tokenizer
    examples = [Example("Is there a red circle in the image?", "Yes.", "pope"),
                Example("Describe the image.", "A small red circle is on the left.", "describe", use_image=False)]
    batch = collate(examples, [make_scene(1), make_scene(2)], processor)
    assert batch["pixel_values"].shape[0] == 1  # only the first example has an image
    for row, ex in enumerate(examples):
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert tok.decode(labelled) == " " + ex.answer + "</s>"
    # padding is on the right and never attended
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert int(batch["input_ids"][1][-1]) == tok.pad_token_id


def test_micro_training_lowers_the_loss_and_is_seeded():
    cfg = EmbeddedConfig(**TINY, steps=12, batch_size=8, warmup=2, lr=3e-3, vision_steps=0, answer_steps=0,
                         text_steps=0)
    _, _, losses = train(cfg, log_every=0)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    _, _, again = train(cfg, log_every=0)
    assert again == losses


def test_average_last_ends_the_stage_with_the_mean_of_its_last_weights(monkeypatch):
    cfg = EmbeddedConfig(**TINY, steps=5, batch_size=4, warmup=1, vision_steps=0, answer_steps=0, text_steps=0)
    before_step = []  # the weights each step starts from: after the step before it
    original = embedded.training_loss_backward

    def recording(model, *args, **kwargs):
        before_step.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(embedded, "training_loss_backward", recording)
    last, _, losses = train(cfg, log_every=0)
    after_step = before_step[1:5] + [{n: p.detach().clone() for n, p in last.named_parameters()}]
    averaged, _, again = train(replace(cfg, average_last=3), log_every=0)
    assert again == losses  # the mean is kept aside: training itself is unchanged
    for name, p in averaged.named_parameters():
        assert torch.allclose(p, sum(w[name] for w in after_step[-3:]) / 3, atol=1e-6), name
    assert any(not torch.equal(p, after_step[-1][n]) for n, p in averaged.named_parameters())
    with pytest.raises(ValueError, match="average_last"):
        EmbeddedConfig(average_last=-1)


def test_shared_colour_rate_draws_scenes_where_two_objects_share_a_colour_and_rate_zero_changes_nothing():
    shared = Scene.shares_a_colour

    def scenes(cfg: EmbeddedConfig) -> list:
        rng, stage = random.Random(5), stage_named(cfg, "language")
        return [training_scene(rng, cfg, stage) for _ in range(400)]

    plain = scenes(EmbeddedConfig())
    assert 0.2 < sum(map(shared, plain)) / 400 < 0.4  # the world's own share, about 29%
    rng = random.Random(5)  # at rate 0 the scenes are those drawn before the rate existed
    assert [s.seed for s in plain] == [1_000_000 + rng.randrange(50_000_000) for _ in range(400)]
    assert all(map(shared, scenes(EmbeddedConfig(shared_colour_rate=1.0))))
    assert 0.55 < sum(map(shared, scenes(EmbeddedConfig(shared_colour_rate=0.5)))) / 400 < 0.75
    with pytest.raises(ValueError, match="shared_colour_rate"):
        EmbeddedConfig(shared_colour_rate=1.5)


def test_saved_model_loads_through_auto_classes(tiny_llava):
    from transformers import LlavaForConditionalGeneration

    assert isinstance(tiny_llava.model, LlavaForConditionalGeneration)
    assert torch.isfinite(next(tiny_llava.model.parameters())).all()


def test_vision_pretraining_lowers_the_patch_loss():
    cfg = EmbeddedConfig(**TINY, vision_steps=10, vision_batch_size=8)
    tokenizer = build_tokenizer()
    losses = pretrain_vision(build_model(tokenizer, cfg), build_processor(tokenizer, cfg), cfg, log_every=0)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5


def test_joint_labels_give_each_object_kind_its_own_class():
    shapes = torch.tensor([[s + 1 for s in range(len(SHAPES))] * len(COLORS) + [0]])
    colours = torch.tensor([[c + 1 for c in range(len(COLORS)) for _ in SHAPES] + [3]])
    joint = joint_labels(shapes, colours)[0].tolist()
    assert joint[-1] == 0  # background, whatever its colour label
    assert sorted(joint[:-1]) == list(range(1, joint_classes()))  # one class per (colour, shape), none shared
    scene = make_scene(11)
    shape_of, colour_of = patch_labels(scene, 96, 12)
    labels = joint_labels(torch.tensor(shape_of), torch.tensor(colour_of)).tolist()
    by_kind = {(list(COLORS)[c - 1], SHAPES[s - 1]): j for s, c, j in zip(shape_of, colour_of, labels) if s}
    assert set(by_kind) == scene.names() and len(set(by_kind.values())) == len(by_kind)


def test_vision_pretraining_with_the_joint_label_adds_its_cross_entropy_and_trains_it():
    import math

    tokenizer = build_tokenizer()

    def losses(**extra):
        torch.manual_seed(0)
        cfg = EmbeddedConfig(**TINY, vision_steps=6, vision_batch_size=8, **extra)
        return pretrain_vision(build_model(tokenizer, cfg), build_processor(tokenizer, cfg), cfg, log_every=0)

    plain, joint = losses(), losses(vision_joint_weight=1.0)
    # the tower and the shape / colour heads start as without the joint head (it is created after them), so the
    # first loss differs by the joint head's cross-entropy at initialisation, close to log(classes)
    assert abs(joint[0] - plain[0] - math.log(joint_classes())) < 0.5
    assert sum(joint[-2:]) / 2 < joint[0] - 0.5


def test_patch_labels_mark_the_object_patches():
    scene = make_scene(7, n_objects=1)
    shapes, colours = patch_labels(scene, 96, 12)
    obj = scene.objects[0]
    centre = (obj.y // 12) * 8 + obj.x // 12
    assert shapes[centre] == SHAPES.index(obj.shape) + 1 and colours[centre] == list(COLORS).index(obj.color) + 1
    assert shapes[0] == 0 or obj.position in ("left", "top")  # a far corner is background
    assert sum(s > 0 for s in shapes) <= 12


def test_patch_labels_equal_a_patch_by_patch_count_of_the_object_mask():
    def by_hand(scene, size=96, patch=12, min_cover=0.12):
        mask, shapes, colours = object_mask(scene, size), [], []
        for row in range(size // patch):
            for col in range(size // patch):
                cell = mask[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch].flatten().tolist()
                counts = [0] + [cell.count(index) for index in range(1, len(scene.objects) + 1)]
                best = counts.index(max(counts))
                obj = scene.objects[best - 1] if best and counts[best] >= min_cover * patch * patch else None
                shapes.append(SHAPES.index(obj.shape) + 1 if obj else 0)
                colours.append(list(COLORS).index(obj.color) + 1 if obj else 0)
        return shapes, colours

    scenes = [make_scene(seed) for seed in range(200)]
    assert any(len(set(patch_labels(s, 96, 12)[0]) - {0}) == 4 for s in scenes)
    for scene in scenes:
        assert patch_labels(scene, 96, 12) == by_hand(scene)


def test_patch_order_labels_mark_each_object_with_its_place_in_the_mention_order():
    for scene in [make_scene(seed) for seed in range(100)]:
        places = patch_order_labels(scene, 96, 12)
        shapes, colours = patch_labels(scene, 96, 12)
        assert [p > 0 for p in places] == [s > 0 for s in shapes]  # the same object patches
        order = mention_order(scene)
        for place, shape, colour in zip(places, shapes, colours):
            if place:  # the object at that place has this patch's shape and colour
                obj = order[place - 1]
                assert (SHAPES.index(obj.shape) + 1, list(COLORS).index(obj.color) + 1) == (shape, colour)
    two = next(s for s in (make_scene(seed, n_objects=2) for seed in range(100))
               if not {o.name for o in s.objects} & {p.partner for p in PRIOR_PAIRS})
    left, right = sorted(two.objects, key=lambda o: o.x)
    places = patch_order_labels(two, 96, 12)
    assert places[(left.y // 12) * 8 + left.x // 12] == 1 and places[(right.y // 12) * 8 + right.x // 12] == 2


def test_patch_order_labels_follow_the_configured_mention_order():
    for scene in [make_scene(seed) for seed in range(100)]:
        places = patch_order_labels(scene, 96, 12, order="kind")
        order = mention_order(scene, "kind")
        by_position = patch_order_labels(scene, 96, 12)
        for obj in scene.objects:  # the patch under each object's centre carries its place
            patch = (min(obj.y, 95) // 12) * 8 + min(obj.x, 95) // 12
            if places[patch]:
                assert order[places[patch] - 1] is obj
                assert by_position[patch] == mention_order(scene).index(obj) + 1


def test_vision_stage_with_order_labels_learns_every_label():
    cfg = EmbeddedConfig(**TINY, vision_steps=10, vision_batch_size=8, vision_order_weight=1.0)
    tokenizer = build_tokenizer()
    plain = pretrain_vision(build_model(tokenizer, cfg), build_processor(tokenizer, cfg),
                            EmbeddedConfig(**TINY, vision_steps=1, vision_batch_size=8), log_every=0)
    losses = pretrain_vision(build_model(tokenizer, cfg), build_processor(tokenizer, cfg), cfg, log_every=0)
    assert losses[0] > plain[0] + 1.0  # a third cross-entropy, over five places, from the start
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5


def test_stage_three_from_saved_stage_two_equals_one_run(tmp_path):
    cfg = EmbeddedConfig(**TINY, steps=3, answer_steps=3, batch_size=4, warmup=1, vision_steps=0, text_steps=2,
                         text_batch_size=4)
    one_run, _, _ = train(cfg, tmp_path / "one", log_every=0)
    train(EmbeddedConfig(**TINY, steps=3, answer_steps=0, batch_size=4, warmup=1, vision_steps=0, text_steps=2,
                         text_batch_size=4), tmp_path / "two", log_every=0)
    resumed, _, _ = train(cfg, tmp_path / "resumed", log_every=0, init=tmp_path / "two")
    for (name, a), (_, b) in zip(one_run.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_text_stage_batches_have_no_image_and_learn_judgments_in_every_template():
    from core.engine.prompts import JUDGE_PROMPTS

    cfg = EmbeddedConfig(**TINY, text_batch_size=64)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, cfg)
    text_stage = language_stages(cfg)[0]
    assert text_stage.name == "text" and text_stage.text_only
    batch = training_batch(0, cfg, processor, text_stage)
    assert "pixel_values" not in batch and batch["input_ids"].shape[0] == 64
    assert not (batch["input_ids"] == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).any()
    prompts = tokenizer.batch_decode(batch["input_ids"])
    for key in cfg.judge_templates:
        marker = JUDGE_PROMPTS[key].split("{sentence}")[0].strip() or JUDGE_PROMPTS[key].split("{sentence}")[1].strip()
        assert any(marker in p for p in prompts), key


def test_alignment_stage_trains_the_projector_alone_on_descriptions_with_the_image():
    cfg = EmbeddedConfig(**TINY, steps=0, answer_steps=0, vision_steps=0, text_steps=0, batch_size=8, align_steps=3,
                         align_lr=1e-2)
    stage = stage_named(cfg, "align")
    assert stage.projector_only and stage.steps == 3
    assert [s.name for s in language_stages(cfg)][:3] == ["text", "align", "language"]
    processor = build_processor(build_tokenizer(), cfg)
    batch = training_batch(0, cfg, processor, stage)
    assert batch["pixel_values"].shape[0] == 8  # every example sees its image
    prompts = processor.tokenizer.batch_decode(batch["input_ids"])
    assert all("Describe" in p for p in prompts)
    before, _, _ = train(replace(cfg, align_steps=0), log_every=0)
    after, _, losses = train(cfg, log_every=0)
    assert len(losses) == 3
    changed = {n for (n, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items())
               if not torch.equal(a, b)}
    assert changed and all("multi_modal_projector" in n for n in changed)
    assert all(p.requires_grad for p in after.parameters())  # later stages train everything again


def test_text_stage_task_weights_can_teach_judgments_alone():
    cfg = EmbeddedConfig(**TINY, text_batch_size=32, text_task_weights=(0, 0, 1))
    processor = build_processor(build_tokenizer(), cfg)
    prompts = processor.tokenizer.batch_decode(training_batch(0, cfg, processor, stage_named(cfg, "text"))["input_ids"])
    assert all("accurate" in p for p in prompts)
    mixed = EmbeddedConfig(**TINY, text_batch_size=32)
    prompts = processor.tokenizer.batch_decode(training_batch(0, mixed, processor, stage_named(mixed, "text"))["input_ids"])
    assert any("Describe" in p for p in prompts) and any("accurate" in p for p in prompts)


def test_init_stages_must_be_known(tmp_path, tiny_llava_dir):
    with pytest.raises(ValueError, match="unknown stages"):
        train(EmbeddedConfig(**TINY), init=tiny_llava_dir, init_stages=("pretraining",))


def test_judge_stage_weighs_judgments_and_shows_its_share_without_the_image():
    cfg = EmbeddedConfig(**TINY, judge_steps=10, judge_text_only_rate=1.0, judge_task_weights=(0, 0, 0, 0, 1),
                         batch_size=16)
    processor = build_processor(build_tokenizer(), cfg)
    stage = language_stages(cfg)[-1]
    assert stage.name == "judge" and stage.steps == 10 and stage.text_only_rate == 1.0
    batch = training_batch(0, cfg, processor, stage)
    assert "pixel_values" not in batch  # every judgment blind at rate 1
    prompts = processor.tokenizer.batch_decode(batch["input_ids"])
    assert all("accurate" in p for p in prompts)
    half = EmbeddedConfig(**TINY, judge_steps=10, judge_task_weights=(0, 0, 0, 0, 1), batch_size=64)
    images = training_batch(0, half, processor, language_stages(half)[-1])["pixel_values"].shape[0]
    assert 16 < images < 48  # judge_text_only_rate 0.5 by default


def test_unlikelihood_negatives_sit_where_a_description_could_repeat_and_raise_the_loss():
    cfg = EmbeddedConfig(**TINY)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, cfg)
    description = "A small yellow heart is at the top. A small blue circle is at the bottom."
    examples = [Example("Is there a red circle in the image?", "Yes.", "pope"),
                Example("Describe the image.", description, "describe")]
    scenes = [make_scene(1), make_scene(2)]
    batch = collate(examples, scenes, processor, unlikelihood=True)
    # one negative: "yellow" where the description says "blue"; only descriptions get negatives
    assert batch["negatives"].tolist() == [[1, batch["negatives"][0, 1].item(), tokenizer.convert_tokens_to_ids("Ġyellow")]]
    row, position, _ = batch["negatives"][0].tolist()
    assert tokenizer.convert_ids_to_tokens(int(batch["input_ids"][row, position])) == "Ġblue"
    plain = collate(examples, scenes, processor)
    assert "negatives" not in plain and torch.equal(plain["input_ids"], batch["input_ids"])

    model = build_model(tokenizer, cfg).eval()
    with torch.no_grad():
        base = per_example_loss(model, plain)
        assert torch.allclose(per_example_loss(model, batch), base)  # weight 0: the plain loss
        logits = model(**{k: v for k, v in plain.items() if k != "labels"}).logits
        p_yellow = torch.softmax(logits[row, position - 1], dim=-1)[tokenizer.convert_tokens_to_ids("Ġyellow")]
        answer_tokens = int((plain["labels"][row] != -100).sum())
        expected = base + 2.0 * -torch.log1p(-p_yellow) / answer_tokens / len(examples)
        assert torch.allclose(per_example_loss(model, batch, unlikelihood_weight=2.0), expected, atol=1e-6)


def test_a_correction_learns_only_its_continuation_after_the_models_own_start():
    cfg = EmbeddedConfig(**TINY)
    processor = build_processor(build_tokenizer(), cfg)
    tok = processor.tokenizer
    start = "A small yellow heart is at the top. A small blue star is on the left."
    examples = [Example("Describe the image.", "A small red cross is on the right.", "describe", prefix=start),
                Example("Describe the image.", "", "describe", prefix=start)]
    batch = collate(examples, [make_scene(1), make_scene(2)], processor, unlikelihood=True)
    labelled = [tok.decode(row[row != -100].tolist()) for row in batch["labels"]]
    assert labelled == [" A small red cross is on the right.</s>", "</s>"]  # the end alone, where all is said
    # the start is in the context, right before the target
    first_target = int((batch["labels"][0] != -100).nonzero()[0])
    assert tok.decode(batch["input_ids"][0, :first_target].tolist()).endswith("ASSISTANT: " + start)
    # the negatives come from the whole description: yellow and blue are spent where "red" is due
    negatives = {tok.convert_ids_to_tokens(token) for row, position, token in batch["negatives"].tolist()}
    assert negatives == {"Ġyellow", "Ġblue"}
    assert {tok.convert_ids_to_tokens(int(batch["input_ids"][row, position]))
            for row, position, _ in batch["negatives"].tolist()} == {"Ġred"}


def test_own_corrections_continue_the_models_greedy_descriptions_and_training_with_them_is_seeded():
    cfg = EmbeddedConfig(**TINY, steps=4, batch_size=8, warmup=1, vision_steps=0, answer_steps=0, text_steps=0,
                         own_prefix_rate=0.5, own_prefix_every=2, own_prefix_scenes=6, unlikelihood_weight=1.0)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, cfg)
    model = build_model(tokenizer, cfg)
    corrections = own_corrections(model, processor, cfg, stage_named(cfg, "language"), step=0)
    # an untrained model's descriptions are all wrong, so every scene gets a correction, which names
    # every object of its scene that the kept start does not
    assert len(corrections) == cfg.own_prefix_scenes and model.training
    for scene, example in corrections:
        said = set(parse_objects(example.prefix)) | set(parse_objects(example.answer))
        assert scene.names() <= said
    _, _, losses = train(cfg, log_every=0)
    _, _, again = train(cfg, log_every=0)
    assert again == losses and len(losses) == 4


def test_length_groups_give_the_gradient_of_the_whole_batch_with_less_padding():
    cfg = EmbeddedConfig(**TINY)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, cfg)
    examples = [Example("Describe the image.", "A small yellow heart is at the top. A small blue circle is at the "
                        "bottom. A large yellow star is on the left.", "describe"),
                Example("Is there a red circle in the image?", "Yes.", "pope"),
                Example("Describe the image.", "A small red circle is on the left.", "describe", use_image=False),
                Example("Describe the image.", "A large blue heart is on the right. A large blue square is at the top.",
                        "describe"),
                Example("How many shapes are there?", "Two.", "count")]
    batch = collate(examples, [make_scene(seed) for seed in range(5)], processor, unlikelihood=True)
    assert len(batch["negatives"]) > 0
    model = build_model(tokenizer, cfg)
    pieces = length_groups(batch, 3, model.config.image_token_id)
    assert [share for _, share in pieces] == [2 / 5, 2 / 5, 1 / 5]
    assert sum(piece["input_ids"].numel() for piece, _ in pieces) < batch["input_ids"].numel()
    assert sum(len(piece.get("pixel_values", [])) for piece, _ in pieces) == 4  # every image, once
    assert sum(len(piece["negatives"]) for piece, _ in pieces) == len(batch["negatives"])

    def gradients(groups: int) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = training_loss_backward(model, batch, groups, unlikelihood_weight=1.0)
        return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole_loss, whole = gradients(1)
    assert abs(whole_loss - per_example_loss(model, batch, 1.0).item()) < 1e-6
    for groups in (2, 3, 9):  # more groups than rows: one row each
        loss, grads = gradients(groups)
        assert abs(loss - whole_loss) < 1e-5
        assert len(grads) == len(whole)
        for grad, reference in zip(grads, whole):
            assert torch.allclose(grad, reference, atol=1e-6, rtol=1e-4)


def test_train_cli_sets_model_size_mention_order_near_miss_rate_task_weights_and_alignment(tmp_path):
    main(["train", "--out", str(tmp_path / "m"), "--text-hidden", "48", "--text-layers", "1", "--text-heads", "2",
          "--text-intermediate", "64", "--vision-steps", "0", "--text-steps", "0", "--steps", "1", "--answer-steps", "0",
          "--batch-size", "2", "--mention-order", "kind", "--pope-near-miss-rate", "0.5", "--kind-list-rate", "0.25",
          "--task-weights", "40,35,7,8,10", "--text-task-weights", "0,0,1", "--align-steps", "2"])
    text_config = json.loads((tmp_path / "m" / "config.json").read_text())["text_config"]
    training_config = json.loads((tmp_path / "m" / "training_config.json").read_text())
    assert (training_config["mention_order"], training_config["pope_near_miss_rate"]) == ("kind", 0.5)
    assert training_config["kind_list_rate"] == 0.25
    with pytest.raises(ValueError, match="kind_list_rate"):
        EmbeddedConfig(kind_list_rate=-0.1)
    assert training_config["task_weights"] == [40, 35, 7, 8, 10]
    assert (training_config["text_task_weights"], training_config["align_steps"]) == ([0, 0, 1], 2)
    for bad in ("40,35,7,8", "40,35,7,8,x", "0,0,0,0,0", "40,-1,7,8,10"):
        with pytest.raises(SystemExit):
            main(["train", "--out", str(tmp_path / "bad"), "--task-weights", bad])
    for bad in ("1,1", "0,0,0", "1,1,x"):
        with pytest.raises(SystemExit):
            main(["train", "--out", str(tmp_path / "bad"), "--text-task-weights", bad])
    assert not (tmp_path / "bad").exists()
    assert (text_config["hidden_size"], text_config["num_hidden_layers"], text_config["num_attention_heads"],
            text_config["intermediate_size"]) == (48, 1, 2, 64)


def test_soft_blind_targets_replace_the_drawn_label_at_the_answer_token_only():
    cfg = EmbeddedConfig(**TINY)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, cfg)
    question = "Description: There is a small blue heart on the left. Is the description accurate? Answer yes or no."
    drawn = [Example(question, "No.", "judge", use_image=False), Example("Is there a red circle in the image?", "Yes.",
                                                                          "pope")]
    soft = [Example(question, "No.", "judge", use_image=False, soft_yes=0.9), drawn[1]]
    scenes = [make_scene(1), make_scene(2)]
    plain, batch = collate(drawn, scenes, processor), collate(soft, scenes, processor)
    assert "soft_yes" not in plain and torch.equal(plain["input_ids"], batch["input_ids"])
    assert batch["soft_yes"][0].item() == pytest.approx(0.9) and torch.isnan(batch["soft_yes"][1])
    assert tokenizer.convert_ids_to_tokens(batch["soft_answer_ids"].tolist()) == ["ĠYes", "ĠNo"]

    model = build_model(tokenizer, cfg).eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in plain.items() if k != "labels"}).logits
        first = int((plain["labels"][0] != -100).nonzero()[0])  # the answer token; logits one before predict it
        logprobs = torch.log_softmax(logits[0, first - 1].float(), dim=-1)
        yes, no = batch["soft_answer_ids"].tolist()
        answer_tokens = int((plain["labels"][0] != -100).sum())
        # only row 0's answer token changes: from -log p(No) to the soft cross-entropy
        change = (-(0.9 * logprobs[yes] + 0.1 * logprobs[no]) + logprobs[no]) / answer_tokens / 2
        assert torch.allclose(per_example_loss(model, batch), per_example_loss(model, plain) + change, atol=1e-6)
        # a target of 0 is the drawn "No." exactly
        zero = collate([Example(question, "No.", "judge", use_image=False, soft_yes=0.0), drawn[1]], scenes, processor)
        assert torch.allclose(per_example_loss(model, zero), per_example_loss(model, plain), atol=1e-6)
    # length groups carry the targets: the same loss in one piece or one row each
    model.zero_grad(set_to_none=True)
    assert abs(training_loss_backward(model, batch, 1) - training_loss_backward(model, batch, 2)) < 1e-5


def test_soft_blind_labels_reach_blind_judgments_only():
    cfg = EmbeddedConfig(**TINY, batch_size=48, soft_blind_labels=True, text_only_rate=0.5,
                         task_weights=(1, 1, 0, 0, 2))
    processor = build_processor(build_tokenizer(), cfg)
    batch = training_batch(0, cfg, processor)
    prompts = processor.tokenizer.batch_decode(batch["input_ids"])
    has_image = (batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).any(dim=1)
    for prompt, image, target in zip(prompts, has_image.tolist(), batch["soft_yes"].tolist()):
        blind_judgment = "accurate" in prompt and not image
        assert (target == target) == blind_judgment  # a number exactly where the row is a blind judgment
    assert not torch.isnan(batch["soft_yes"]).all()
    off = training_batch(0, EmbeddedConfig(**TINY, batch_size=48, text_only_rate=0.5, task_weights=(1, 1, 0, 0, 2)),
                         processor)
    assert "soft_yes" not in off and torch.equal(off["input_ids"], batch["input_ids"])  # same draws, same rows
    text_stage = training_batch(0, cfg, processor, language_stages(cfg)[0])
    assert text_stage["soft_yes"][~torch.isnan(text_stage["soft_yes"])].numel() > 0


def test_train_cli_records_soft_blind_labels(tmp_path):
    main(["train", "--out", str(tmp_path / "m"), "--text-hidden", "48", "--text-layers", "1", "--text-heads", "2",
          "--text-intermediate", "64", "--vision-steps", "0", "--text-steps", "0", "--steps", "2", "--answer-steps", "0",
          "--batch-size", "4", "--soft-blind-labels", "--text-only-rate", "1.0", "--task-weights", "0,0,0,0,1",
          "--average-last", "1", "--oppose-answer-rows"])
    config = json.loads((tmp_path / "m" / "training_config.json").read_text())
    assert config["soft_blind_labels"] is True and config["average_last"] == 1 and config["oppose_answer_rows"] is True


def test_opposed_answer_rows_keep_every_log_odds_and_stay_opposed_through_training():
    cfg = EmbeddedConfig(**TINY, steps=6, batch_size=4, warmup=1, vision_steps=0, answer_steps=0, text_steps=0,
                         task_weights=(0, 1, 0, 0, 1))
    tokenizer = build_tokenizer(cfg.vocab_size)
    processor = build_processor(tokenizer, cfg)
    yes_id, no_id = answer_token_ids(processor)
    assert tokenizer.decode([yes_id]) == " Yes" and tokenizer.decode([no_id]) == " No"
    model = build_model(tokenizer, cfg)
    weight = model.get_output_embeddings().weight
    hidden = torch.randn(5, cfg.text_hidden)
    log_odds = hidden @ (weight[yes_id] - weight[no_id]).detach()
    oppose_answer_rows(model, (yes_id, no_id))
    assert torch.equal(weight[no_id], -weight[yes_id])
    assert torch.allclose(hidden @ (weight[yes_id] - weight[no_id]).detach(), log_odds, atol=1e-5)
    assert torch.allclose(hidden @ weight[yes_id].detach(), log_odds / 2, atol=1e-5)  # logit(yes): half the log-odds

    untied, _, _ = train(cfg, log_every=0)
    opposed, _, losses = train(replace(cfg, oppose_answer_rows=True), log_every=0)
    untied_rows, opposed_rows = untied.get_output_embeddings().weight, opposed.get_output_embeddings().weight
    assert not torch.allclose(untied_rows[no_id], -untied_rows[yes_id], atol=1e-3)
    assert torch.allclose(opposed_rows[no_id], -opposed_rows[yes_id], atol=1e-6)
    start = build_model(tokenizer, cfg).get_output_embeddings().weight
    assert not torch.allclose(opposed_rows[yes_id], (start[yes_id] - start[no_id]) / 2, atol=1e-3)  # it trained
    assert sum(losses[-2:]) / 2 < losses[0]


def test_judge_caption_label_rate_changes_stage_four_judgments_alone(monkeypatch):
    base = EmbeddedConfig(**TINY, judge_steps=10, caption_label_rate=0.3, batch_size=32)
    same = replace(base, judge_caption_label_rate=0.3)
    more = replace(base, judge_caption_label_rate=0.8)
    processor = build_processor(build_tokenizer(), base)

    def prompts(cfg: EmbeddedConfig, stage: str) -> list[str]:
        return processor.tokenizer.batch_decode(training_batch(3, cfg, processor, stage_named(cfg, stage))["input_ids"])

    # the earlier stages' rate, given again, draws the same batches: earlier recipes keep their random streams
    assert prompts(same, "judge") == prompts(base, "judge")
    assert prompts(more, "answers") == prompts(base, "answers")
    assert prompts(more, "judge") != prompts(base, "judge")
    # what each example is drawn with: judgments take stage 4's rate, yes/no questions keep the config's
    seen = []
    real = embedded.training_example

    def spy(*args, **kwargs):
        seen.append((args[4], args[9]))  # caption_label_rate (judgments), pope_caption_label_rate
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "training_example", spy)
    training_batch(0, more, processor, stage_named(more, "judge"))
    training_batch(0, more, processor, stage_named(more, "answers"))
    assert seen[:32] == [(0.8, 0.3)] * 32 and seen[32:] == [(0.3, None)] * 32
    with pytest.raises(ValueError, match="judge_caption_label_rate"):
        EmbeddedConfig(judge_caption_label_rate=1.5)
