"""Converting Meta's released data2vec 2.0 checkpoints (fairseq `.pt`): random checkpoints with fairseq's exact key
layout and cfg (tests/fairseq_reference.py) are converted and compared with an independent reference forward written
from the fairseq module definitions, in fp32 eval mode, with padding where the modality has it."""

import re

import pytest
import torch
from modeling_data2vec_unified.conversion_fairseq import checkpoint_kind, convert_fairseq_checkpoint, load_checkpoint

from fairseq_reference import example_inputs, fake_checkpoint, reference_forward

PRETRAINED = ["d2v2_vision", "d2v2_audio", "d2v2_text"]


FINETUNED = ["d2v2_vision_ft", "d2v2_audio_ctc"]


ATOL = 1e-4


def saved(tmp_path, checkpoint, name="checkpoint.pt"):
    torch.save(checkpoint, tmp_path / name)
    return tmp_path / name


def model_inputs(kind, inputs):
    """Our models' inputs (transformers' conventions: attention_mask 1 = real) from the reference's."""
    if "vision" in kind:
        return {"pixel_values": inputs["pixel_values"]}
    name = "input_values" if "audio" in kind else "input_ids"
    return {name: inputs[name], "attention_mask": inputs["attention_mask"]}


def max_diff(ours, theirs, padding_mask=None):
    """max |ours - theirs| over real positions (padded positions carry no meaning: fairseq zeroes text padding)."""
    diff = (ours - theirs).abs()
    if padding_mask is not None and diff.dim() == 3:
        diff = diff[~padding_mask]
    return float(diff.max())


def student_diffs(model, kind, checkpoint, inputs) -> list[float]:
    """Per layer (the input of the first main block, then each block's output), our student against the reference."""
    reference = reference_forward(checkpoint, inputs)
    with torch.no_grad():
        out = model.data2vec(**model_inputs(kind, inputs), output_hidden_states=True)
    ours = out.hidden_states[-len(reference["hidden_states"]):]  # prenet blocks: the reference starts at the main ones
    return [max_diff(a, b, reference["padding_mask"]) for a, b in zip(ours, reference["hidden_states"])]


@pytest.mark.parametrize("kind", PRETRAINED)
def test_pretrained_2_0_checkpoints_match_the_reference_forward(kind, tmp_path):
    checkpoint = fake_checkpoint(kind)
    converted = convert_fairseq_checkpoint(saved(tmp_path, checkpoint))
    model = converted.build()
    assert type(model).__name__ == "Data2VecForPreTraining" and model.config.algorithm == "data2vec2"
    inputs = example_inputs(kind, batch=3)
    diffs = student_diffs(model, kind, checkpoint, inputs)
    assert len(diffs) == checkpoint["cfg"]["model"]["depth"] + 1 and max(diffs) <= ATOL, diffs
    # the decoder, on the unmasked encoder output (the reference feeds all tokens, no noise)
    reference = reference_forward(checkpoint, inputs)
    with torch.no_grad():
        hidden = model.data2vec(**model_inputs(kind, inputs)).last_hidden_state[:, model.num_prefix_tokens:]
        T = hidden.shape[1]
        keep = torch.arange(T)[None].expand(hidden.shape[0], -1)
        grid = (model.config.patch_grid if kind == "d2v2_vision" else None)
        decoded = model.decoder(hidden, keep, T, grid)
    assert max_diff(decoded, reference["decoder_output"], reference["padding_mask"]) <= ATOL


@pytest.mark.parametrize("kind", PRETRAINED)
def test_the_teacher_is_metas_ema_and_makes_its_targets(kind, tmp_path):
    """`_ema` becomes the teacher: its targets (top-K FFN outputs, instance-normed, averaged) equal the reference
    teacher's, and differ from a copy of the student's."""
    checkpoint = fake_checkpoint(kind)
    model = convert_fairseq_checkpoint(checkpoint).build()
    inputs = example_inputs(kind, batch=1)  # unpadded: fairseq's instance norm counts padded frames, ours does not
    batch = model_inputs(kind, inputs)
    expected = reference_forward(checkpoint, inputs, weights="ema")["targets"]
    with torch.no_grad():
        targets = model.forward_teacher(batch, model.data2vec.embed(batch))
        assert max_diff(targets, expected) <= ATOL
        model.reset_teacher()
        assert max_diff(model.forward_teacher(batch, model.data2vec.embed(batch)), expected) > 1e-2


@pytest.mark.parametrize("kind", FINETUNED)
def test_finetuned_2_0_checkpoints_give_the_reference_logits(kind, tmp_path):
    checkpoint = fake_checkpoint(kind)
    converted = convert_fairseq_checkpoint(saved(tmp_path, checkpoint))
    model = converted.build()
    assert type(model).__name__ == {"d2v2_vision_ft": "Data2VecForImageClassification",
                                    "d2v2_audio_ctc": "Data2VecForCTC"}[kind]
    inputs = example_inputs(kind, batch=3)
    reference = reference_forward(checkpoint, inputs)
    with torch.no_grad():
        logits = model(**model_inputs(kind, inputs)).logits
    assert logits.shape == reference["logits"].shape
    assert max_diff(logits, reference["logits"], reference["padding_mask"]) <= ATOL
    assert converted.teacher is None and not converted.dropped


@pytest.mark.parametrize("kind", PRETRAINED + FINETUNED)
def test_a_perturbed_tensor_is_detected(kind):
    """Each checkpoint's perturbed copy (one tensor, +0.05 noise) converts to a model whose outputs move by more than
    the tolerance: the comparison above can fail."""
    checkpoint = fake_checkpoint(kind)
    state = checkpoint["model"]
    name = next(k for k in state if k.endswith("blocks.0.mlp.fc1.weight"))
    state[name] = state[name] + 0.05 * torch.randn_like(state[name].float()).to(state[name].dtype)
    model = convert_fairseq_checkpoint(checkpoint).build()
    inputs = example_inputs(kind)
    reference = reference_forward(fake_checkpoint(kind), inputs)
    with torch.no_grad():
        out = model(**model_inputs(kind, inputs)) if kind in FINETUNED else None
        ours = out.logits if out is not None else model.data2vec(**model_inputs(kind, inputs)).last_hidden_state
    theirs = reference["logits"] if kind in FINETUNED else reference["last_hidden_state"]
    assert max_diff(ours, theirs, reference["padding_mask"]) > ATOL


def test_every_key_is_mapped_or_dropped_with_a_reason_and_an_unknown_one_is_an_error():
    checkpoint = fake_checkpoint("d2v2_vision")
    converted = convert_fairseq_checkpoint(checkpoint)
    assert converted.dropped == {"_ema": "the EMA teacher: converted on its own"}
    checkpoint["model"]["modality_encoders.IMAGE.some_new_thing.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"1 tensor\(s\) this converter does not know, e\.g\. "
                                         r"modality_encoders\.IMAGE\.some_new_thing\.weight"):
        convert_fairseq_checkpoint(checkpoint)
    del checkpoint["model"]["modality_encoders.IMAGE.some_new_thing.weight"]
    checkpoint["model"]["modality_encoders.IMAGE.some_count"] = 3
    with pytest.raises(ValueError, match=r"entries that are not tensors .*: modality_encoders\.IMAGE\.some_count"):
        convert_fairseq_checkpoint(checkpoint)


class Payload:  # a class a pickle would have to import and build: never unpickled
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_safe_loading_refuses_other_pickled_types_and_other_kinds(tmp_path, capsys):
    checkpoint = fake_checkpoint("d2v2_audio")
    checkpoint["extra_state"]["evil"] = Payload()
    with pytest.raises(ValueError, match=r"needs the type\(s\) builtins\.print to be unpickled.*refusing to run arbitrary"):
        load_checkpoint(saved(tmp_path, checkpoint))
    assert "arbitrary code ran" not in capsys.readouterr().out
    assert load_checkpoint(saved(tmp_path, fake_checkpoint("d2v2_audio")))["cfg"]["model"]["_name"] == "data2vec_multi"

    wav2vec = fake_checkpoint("d2v2_audio")
    wav2vec["cfg"]["model"]["_name"] = "wav2vec2"
    with pytest.raises(ValueError, match="a fairseq 'wav2vec2' model, not a data2vec one"):
        checkpoint_kind(wav2vec)
    ctc = fake_checkpoint("d2v2_audio_ctc")
    ctc["cfg"]["model"]["w2v_args"]["model"]["_name"] = "wav2vec2"
    with pytest.raises(ValueError, match="a CTC fine-tune of a 'wav2vec2' model"):
        checkpoint_kind(ctc)
    with pytest.raises(ValueError, match="not a data2vec checkpoint"):
        checkpoint_kind({"state_dict": {}})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_data2vec_convert_writes_folders_the_auto_classes_load_and_pretraining_continues(tmp_path, capsys):
    """`data2vec-convert file.pt folder`: AutoModel gives the student (the reference's outputs), AutoModelForPreTraining
    the student, decoder and Meta's teacher, the processor loads; `data2vec-pretrain --init_from folder` starts from
    that teacher; a CTC fine-tune becomes Data2VecForCTC with a tokenizer whose ids are its output rows."""
    from modeling_data2vec_unified.conversion_cli import main
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForCTC, AutoModelForPreTraining, AutoProcessor

    checkpoint = fake_checkpoint("d2v2_audio")
    main([str(saved(tmp_path, checkpoint)), str(tmp_path / "audio")])
    assert "wrote Data2VecForPreTraining (audio)" in capsys.readouterr().out
    inputs = example_inputs("d2v2_audio", batch=3)
    reference = reference_forward(checkpoint, inputs)
    model = AutoModel.from_pretrained(tmp_path / "audio").eval()
    assert type(model).__name__ == "Data2VecAudioModel"
    with torch.no_grad():
        hidden = model(**model_inputs("d2v2_audio", inputs)).last_hidden_state
    assert max_diff(hidden, reference["last_hidden_state"], reference["padding_mask"]) <= ATOL
    pretraining = AutoModelForPreTraining.from_pretrained(tmp_path / "audio")
    ema = convert_fairseq_checkpoint(checkpoint).teacher
    assert all(torch.equal(pretraining.teacher.model.state_dict()[k], v) for k, v in ema.items())
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "audio").do_normalize

    trainer = Data2VecPretrainer(PretrainingArguments(
        modality="audio", init_from=str(tmp_path / "audio"), output_dir=str(tmp_path / "continued"), max_steps=2,
        per_device_train_batch_size=2, max_examples=8, report_to="none", disable_tqdm=True, probe=False,
        logging_steps=1))
    assert trainer.config.algorithm == "data2vec2"
    teacher = trainer.unwrapped.teacher.model.state_dict()
    assert all(torch.equal(teacher[k], v) for k, v in ema.items())  # Meta's teacher, not a copy of the student
    trainer.train()
    assert trainer.state.global_step == 2 and (tmp_path / "continued" / "model.safetensors").is_file()

    ctc = saved(tmp_path, fake_checkpoint("d2v2_audio_ctc"), "ctc.pt")
    with pytest.raises(SystemExit):  # its 12 rows are not LibriSpeech's 32 letters
        main([str(ctc), str(tmp_path / "ctc")])
    assert "pass the fine-tune's own dict.ltr.txt with --fairseq_dict" in capsys.readouterr().err
    letters = "| E T A O N I H".split()
    (tmp_path / "dict.ltr.txt").write_text("".join(f"{c} {100 - i}\n" for i, c in enumerate(letters)))
    main([str(ctc), str(tmp_path / "ctc"), "--fairseq_dict", str(tmp_path / "dict.ltr.txt")])
    model = AutoModelForCTC.from_pretrained(tmp_path / "ctc").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "ctc")
    assert processor.tokenizer.convert_ids_to_tokens(list(range(12))) == ["<pad>", "<s>", "</s>", "<unk>", *letters]
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id == 0  # fairseq's blank is row 0
    with torch.no_grad():
        logits = model(**model_inputs("d2v2_audio_ctc", inputs)).logits
    assert max_diff(logits, reference_forward(fake_checkpoint("d2v2_audio_ctc"), inputs)["logits"],
                    reference["padding_mask"]) <= ATOL
    assert len(processor.batch_decode(logits.argmax(-1))) == 3


@pytest.mark.parametrize("kind", ["d2v2_vision", "d2v2_vision_ft", "d2v1_audio", "d2v1_audio_ctc", "d2v1_text",
                                  "beit_vision"])
def test_every_kind_converts_on_the_command_line(kind, tmp_path, capsys):
    """`data2vec-convert` writes every kind (the folder is reloaded and checked inside), with the teacher where the file
    has one and the processor of the recipe; the vision card names the CC-BY-NC licence."""
    import json

    from modeling_data2vec_unified.conversion_cli import main

    checkpoint = fake_checkpoint(kind)
    flags = []
    if kind.endswith("ctc"):
        rows = checkpoint["model"]["w2v_encoder.proj.weight"].shape[0]
        (tmp_path / "dict.ltr.txt").write_text("".join(f"{chr(65 + i)} 1\n" for i in range(rows - 4)))
        flags = ["--fairseq_dict", str(tmp_path / "dict.ltr.txt")]
    main([str(saved(tmp_path, checkpoint)), str(tmp_path / "out"), *flags])
    out = tmp_path / "out"
    has_teacher = kind in ("d2v2_vision", "d2v1_audio", "d2v1_text", "beit_vision")
    assert (out / "teacher.safetensors").is_file() == has_teacher
    processor = "processor_config.json" if kind.endswith("ctc") else "preprocessor_config.json"
    assert (out / processor).is_file() == (kind != "d2v1_text")  # text: no BPE files given
    if "vision" in kind:
        assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] == [0.485, 0.456, 0.406]
        assert "CC-BY-NC" in (out / "README.md").read_text()
    assert "wrote Data2VecFor" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["d2v2_text", "d2v1_text"])
def test_a_text_checkpoint_converts_with_its_tokenizer(kind, tmp_path):
    """With dict.txt + GPT-2's encoder.json / vocab.bpe, the converted folder holds a tokenizer whose ids are the
    embedding rows: text tokenized by it gives the reference model's outputs."""
    import json

    from modeling_data2vec_unified.conversion_cli import main
    from transformers import AutoModel, AutoTokenizer

    from gpt2_reference import CORPUS, bytes_to_unicode, learn_merges

    merges = learn_merges(CORPUS, 40)
    encoder = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        encoder.setdefault(a + b, len(encoder))
    (tmp_path / "encoder.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    b2u = bytes_to_unicode()
    ids = [encoder[b2u[b]] for b in b"abcdefghijklmnopqrstuvwxyz "] + list(range(256, 256 + 17))  # 44 lines
    lines = [f"{i} {1000 - n}" for n, i in enumerate(ids)] + ["madeupword0000 0", "madeupword0001 0"]
    (tmp_path / "dict.txt").write_text("".join(line + "\n" for line in lines))  # 4 + 46 rows, <mask>: 51

    checkpoint = fake_checkpoint(kind)
    main([str(saved(tmp_path, checkpoint)), str(tmp_path / "out"), "--fairseq_dict", str(tmp_path / "dict.txt"),
          "--gpt2_bpe", str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    batch = tokenizer(["the data is here", "a b"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == 0 and tokenizer.pad_token_id == 1 and tokenizer.mask_token_id == 50
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "padding_mask": batch["attention_mask"] == 0}
    reference = reference_forward(checkpoint, inputs)
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        hidden = model(**model_inputs(kind, inputs)).last_hidden_state
    assert max_diff(hidden, reference["last_hidden_state"], reference["padding_mask"]) <= ATOL


def test_a_converted_pretrained_model_fine_tunes_with_a_fresh_head(tmp_path):
    """The converted 2.0 image model loads into the classification head (student weights kept, a new head) and a
    Trainer-style step runs: loss, gradients, an optimizer step."""
    from modeling_data2vec_unified.conversion_cli import convert_fairseq
    from transformers import AutoModelForImageClassification

    checkpoint = fake_checkpoint("d2v2_vision")
    convert_fairseq(saved(tmp_path, checkpoint), tmp_path / "out")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out", num_labels=3)
    inputs = example_inputs("d2v2_vision", batch=4)
    reference = reference_forward(checkpoint, inputs)
    with torch.no_grad():
        model.eval()
        hidden = model.data2vec(pixel_values=inputs["pixel_values"]).last_hidden_state
    assert max_diff(hidden, reference["last_hidden_state"]) <= ATOL
    model.train()
    out = model(pixel_values=inputs["pixel_values"], labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    before = model.classifier.weight.detach().clone()
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert torch.isfinite(out.loss) and not torch.equal(before, model.classifier.weight)


def test_the_image_recipes_training_choices_are_kept():
    """fairseq data2vec2.py weighs the CLS term by `cls_loss * sample_size` and its criterion sums every element
    before the trainer divides by sample_size: the weight multiplies a SUM over the B x clone_batch copies, so the
    converted model's CLS term is exactly B x clone_batch times the per-copy mean. The image recipe sets
    min_target_var / min_pred_var to 0 (no collapse stop), read from the cfg."""
    checkpoint = fake_checkpoint("d2v2_vision")
    config = convert_fairseq_checkpoint(checkpoint).config
    assert (config.cls_loss_weight, config.cls_loss_reduction) == (0.01, "sum")
    assert (config.min_target_var, config.min_pred_var) == (0.0, 0.0)
    checkpoint["cfg"]["model"].update(min_target_var=0.3, min_pred_var=0.02)
    model = convert_fairseq_checkpoint(checkpoint).build()
    assert (model.config.min_target_var, model.config.min_pred_var) == (0.3, 0.02)
    c = model.config
    c.mask_noise_std = 0.0  # a deterministic decoder input, so the three losses differ by the CLS term only
    B, P = 2, c.patch_grid[0] * c.patch_grid[1]
    pixels = example_inputs("d2v2_vision", batch=B)["pixel_values"]
    visible = round(P * (1 - c.mask_prob))  # fairseq's exact count of visible patches per copy
    mask = torch.rand(B, c.clone_batch, P, generator=torch.Generator().manual_seed(0)).argsort(-1) >= visible
    losses = {}
    with torch.no_grad():
        for weight, reduction in ((0.0, "sum"), (0.01, "sum"), (0.01, "mean")):
            c.cls_loss_weight, c.cls_loss_reduction = weight, reduction
            losses[weight, reduction] = model(pixel_values=pixels, bool_masked_pos=mask).loss.item()
    summed, mean = losses[0.01, "sum"] - losses[0.0, "sum"], losses[0.01, "mean"] - losses[0.0, "sum"]
    assert mean > 1e-6 and summed == pytest.approx(B * c.clone_batch * mean, rel=1e-4)


@pytest.mark.parametrize("kind", PRETRAINED)
def test_the_layer_norm_eps_is_the_checkpoints(kind):
    """fairseq data2vec_multi's `norm_eps` (the recipe's cfg: 1e-6 or 1e-5 by modality) becomes layer_norm_eps
    exactly: a wrong eps moves the outputs by less than the forward comparison's tolerance, so it is checked as a
    value, and a changed cfg value follows."""
    checkpoint = fake_checkpoint(kind)
    eps = float(checkpoint["cfg"]["model"]["norm_eps"])
    assert eps in (1e-5, 1e-6) and convert_fairseq_checkpoint(checkpoint).config.layer_norm_eps == eps
    checkpoint["cfg"]["model"]["norm_eps"] = 1e-3
    assert convert_fairseq_checkpoint(checkpoint).config.layer_norm_eps == 1e-3


def test_the_converter_names_what_is_wrong_with_a_bad_file_or_destination(tmp_path, capsys):
    """A truncated checkpoint, a text file named .pt, a cfg missing a field every released checkpoint has, and a
    destination that is a file: each a one-line error naming the file and the fix (no traceback)."""
    from modeling_data2vec_unified.conversion_cli import main

    good = saved(tmp_path, fake_checkpoint("d2v2_vision"))
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")
    edited = fake_checkpoint("d2v2_vision")
    del edited["cfg"]["model"]["modalities"]
    saved(tmp_path, edited, "edited.pt")
    (tmp_path / "afile").write_text("x")
    cases = [("truncated.pt", "out", r"truncated.pt is not a readable PyTorch checkpoint \(truncated"),
             ("text.pt", "out", r"text.pt is not a readable PyTorch checkpoint \(truncated, or not written by "
                                r"torch.save"),
             ("edited.pt", "out", r"the checkpoint lacks 'modalities' .*restore the field"),
             ("checkpoint.pt", "afile", r"the destination .*afile is a file: give a folder")]
    for source, destination, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path / source), str(tmp_path / destination)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and re.search(message, err), (source, err)
        assert "Traceback" not in err
