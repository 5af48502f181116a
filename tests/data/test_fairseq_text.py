"""fairseq dictionary + GPT-2 BPE -> transformers tokenizer (modeling_data2vec_unified/fairseq_text.py).

The files are built here: a small GPT-2-style byte-level BPE (encoder.json + vocab.bpe, merges learnt by a few lines
of Python on a small corpus) and a dict.txt covering only part of it, in another order, with counts and
madeupword padding. The reference encoder below is written from fairseq's sources, independently of the module
under test: `fairseq/data/encoders/gpt2_bpe_utils.py` (bytes_to_unicode, the GPT-2 pattern, `Encoder.bpe`,
`get_encoder`), `fairseq/data/dictionary.py` (`Dictionary.__init__`, `add_symbol`, `add_from_file`, `index`,
`encode_line`), `fairseq/tokenizer.py` (`tokenize_line`), `fairseq/tasks/masked_lm.py` (`<mask>` appended) and
`fairseq/models/roberta/hub_interface.py` (`encode`, `fill_mask`).
"""

import json
import random
import subprocess
import sys

import modeling_data2vec_unified as d2v
import pytest
from modeling_data2vec_unified.fairseq_text import read_gpt2_bpe
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gpt2_reference import CORPUS, FairseqReference, bytes_to_unicode, learn_merges


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory):
    """encoder.json (256 byte symbols in bytes_to_unicode order, merged tokens in merge order, <|endoftext|>) and
    vocab.bpe ("#version: 0.2" header, one merge a line, final newline), as GPT-2's are laid out."""
    folder = tmp_path_factory.mktemp("gpt2")
    merges = learn_merges(CORPUS, 300)
    encoder = {}
    for ch in bytes_to_unicode().values():
        encoder[ch] = len(encoder)
    for a, b in merges:
        encoder.setdefault(a + b, len(encoder))
    encoder["<|endoftext|>"] = len(encoder)
    (folder / "encoder.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder, encoder, merges


def write_dict(path, gpt2_ids, seed=0, pad_to=8):
    """dict.txt as fairseq-preprocess writes it: "<gpt2 id> <count>" by decreasing count (so not GPT-2's order),
    then madeupwords up to a multiple of `pad_to` rows counting the 4 specials (Dictionary.finalize)."""
    rng = random.Random(seed)
    counts = {i: rng.randint(1, 10_000) for i in gpt2_ids}
    lines = [f"{i} {c}" for i, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    n = 0
    while (4 + len(lines)) % pad_to:
        lines.append(f"madeupword{n:04d} 0")
        n += 1
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


@pytest.fixture(scope="module")
def partial(gpt2_files, tmp_path_factory):
    """A dict.txt that lacks about a quarter of the GPT-2 tokens: some bytes (é's, the digit 7, 'z'), tokens that
    other merges are built from, and whole-word tokens."""
    folder, encoder, merges = gpt2_files
    rng = random.Random(1)
    b2u = bytes_to_unicode()
    left_out = {encoder[b2u[b]] for b in "é7z".encode("utf-8")} | {encoder["<|endoftext|>"]}
    left_out |= {i for i in range(256, len(encoder) - 1) if rng.random() < 0.25}
    present = [i for i in encoder.values() if i not in left_out]
    dict_txt = tmp_path_factory.mktemp("partial") / "dict.txt"
    n_lines = write_dict(dict_txt, present)
    ref = FairseqReference(dict_txt, folder / "encoder.json", folder / "vocab.bpe")
    tok = d2v.tokenizer_from_fairseq(dict_txt, folder / "encoder.json", folder / "vocab.bpe", model_max_length=512)
    return dict(dict_txt=dict_txt, ref=ref, tok=tok, n_lines=n_lines, left_out=left_out, folder=folder)


@pytest.fixture(scope="module")
def full(gpt2_files, tmp_path_factory):
    """A dict.txt with a line for every GPT-2 token (like the released data2vec / RoBERTa one)."""
    folder, encoder, _ = gpt2_files
    dict_txt = tmp_path_factory.mktemp("full") / "dict.txt"
    write_dict(dict_txt, list(encoder.values()), seed=2)
    ref = FairseqReference(dict_txt, folder / "encoder.json", folder / "vocab.bpe")
    tok = d2v.tokenizer_from_fairseq(dict_txt, folder / "encoder.json", folder / "vocab.bpe")
    return dict(dict_txt=dict_txt, ref=ref, tok=tok, folder=folder)


STRINGS = [
    "", " ", "  ", "\n", "\t", " \n ", "Hello world", "Hello world!", " Hello", "Hello ", "hello   world",
    "The quick brown fox jumps over the lazy dog.", "It's we'll they've I'm you'd don't CAN'T it'S",
    "'s 's's ''s '", "data2vec", "2024 12345 3.14159 1,000,000 100% 50/50 007 77 7", "abc123def 4five",
    "Café naïve résumé déjà vu — façade", "über Straße Grüße", "Ελληνικά русский", "日本語のテキスト 中文",
    "Emoji 🙂🙂 and symbols ©®™ … «quotes» “curly”", "punctuation!!! ?? ... -- ;; :: (a) [b] {c}",
    "    indented\twith\ttabs  and   runs", "new\nlines\n\nblank\r\nwindows\rline", "trailing spaces   ",
    "zebra zoo jazz pizza", "Zzz zz z", "quux frobnicate xyzzy plugh", "e\u0301 n\u0303 combining",
    "nbsp\u00a0here thin\u2009space ideo\u3000space", "line\u2028sep para\u2029sep", "\x0b\x0c\x1c\x1d\x1e\x1f\x85",
    "zero\u200bwidth joiner\u200d🙂\u200d", "ǅ titlecase ǈ", "١٢٣ Arabic-Indic digits ½ ² Ⅻ", "\u00ad soft hyphen",
    "a" * 50, " the" * 20, "mad madeupword0000 made",
]


def random_strings(n, seed):
    rng = random.Random(seed)
    pool = list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ 0123456789 .,;:!?'\"-()[]") + list(CORPUS) + [
        " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009", "\u3000", "\u200b", "'s", "'ll", "é", "ß", "日", "🙂",
        "\u0301", "7", "z", "\x85", "\x0b"]
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def test_the_fixture_reaches_the_cases_that_matter(partial, gpt2_files):
    """The partial dictionary's <unk>s come from single bytes, from GPT-2 tokens other merges build on, and from
    whole tokens; the dictionary order differs from GPT-2's."""
    _, encoder, merges = gpt2_files
    ref, left_out = partial["ref"], partial["left_out"]
    decoder = {v: k for k, v in encoder.items()}
    final = [t for s in STRINGS for t in ref.gpt2_tokens(s)]
    unknown_final = {t for t in final if encoder[t] in left_out}
    merge_inputs = {p for pair in merges for p in pair}
    assert any(len(t) == 1 for t in unknown_final)
    assert any(len(t) > 1 and t in merge_inputs for t in unknown_final)
    assert any(len(t) > 1 and t not in merge_inputs for t in unknown_final)
    rows = {int(s): i for i, s in enumerate(ref.symbols) if s.isdigit()}
    assert sorted(rows, key=rows.get) != sorted(rows)
    assert decoder and sum(ref.encode(s).count(3) for s in STRINGS) > 10


@pytest.mark.parametrize("which", ["partial", "full"])
def test_ids_equal_fairseq_on_varied_text(which, request):
    case = request.getfixturevalue(which)
    tok, ref = case["tok"], case["ref"]
    strings = STRINGS + random_strings(300, seed=3)
    expected = [ref.encode(s) for s in strings]
    for s, want in zip(strings, expected):
        assert tok(s)["input_ids"] == want, s
        assert tok.encode(s, add_special_tokens=False) == want[1:-1], s
        assert tok.convert_tokens_to_ids(tok.tokenize(s)) == want[1:-1], s
    assert tok(strings)["input_ids"] == expected  # batched
    assert all(max(ids) < len(ref.symbols) for ids in expected)


def test_the_released_layout_gives_a_plain_fast_tokenizer_and_the_partial_one_maps_unknowns(partial, full):
    assert type(full["tok"]) is PreTrainedTokenizerFast
    assert isinstance(partial["tok"], d2v.FairseqDictionaryTokenizer)
    tok, ref = partial["tok"], partial["ref"]
    assert len(tok) == tok.vocab_size == len(ref.symbols) == 4 + partial["n_lines"] + 1
    assert max(tok.get_vocab().values()) == len(ref.symbols) - 1
    with pytest.raises(ValueError, match="rows"):
        tok.add_tokens(["brandnewtoken"])


def test_pairs_are_roberta_style(partial, full):
    for case in (partial, full):
        tok, ref = case["tok"], case["ref"]
        pairs = [("Hello world", "It's 2024."), ("", "zebra"), ("déjà vu", ""), ("a b", "c d"), ("", "")]
        for a, b in pairs:
            want = ref.encode(a, b)  # <s> A </s> </s> B </s>
            assert want[: len(ref.encode(a))] == ref.encode(a) and want.count(2) == 3
            if b:  # tok(a, "") is tok(a): transformers drops an empty text_pair unless it comes in a batch
                assert tok(a, b)["input_ids"] == want
        assert tok([a for a, _ in pairs], [b for _, b in pairs])["input_ids"] == [ref.encode(a, b) for a, b in pairs]
        assert "token_type_ids" not in tok("a", "b")


def test_special_rows_and_mask(partial):
    tok, ref = partial["tok"], partial["ref"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (tok.cls_token_id, tok.sep_token_id) == (0, 2)
    # MaskedLMTask.__init__ appends <mask> after dict.txt (madeupword padding included): the last row
    assert tok.mask_token_id == ref.mask_idx == len(ref.symbols) - 1 == 4 + partial["n_lines"]
    assert (4 + partial["n_lines"]) % 8 == 0 and len(ref.symbols) % 8 == 1
    assert tok.convert_tokens_to_ids("madeupword0000") == ref.indices["madeupword0000"]
    assert tok.convert_ids_to_tokens(ref.mask_idx) == "<mask>"
    batch = tok(["Hello", "Hello world, it's me"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0
    assert tok.model_max_length == 512


def test_mask_in_text_reads_like_fill_mask(partial):
    tok, ref = partial["tok"], partial["ref"]
    for text in ["Paris is the <mask> of France.", "<mask> world", "The zebra <mask>", "It's <mask>'s."]:
        want = ref.fill_mask_tokens(text)
        assert want.count(ref.mask_idx) == 1
        assert tok(text)["input_ids"] == want, text


def test_special_symbols_written_in_the_text(partial):
    """As in transformers' RoBERTa, "<s>" / "</s>" / "<mask>" in the text are the special tokens; with
    split_special_tokens=True they are plain text, as fairseq's GPT2BPE.encode reads them."""
    tok, ref = partial["tok"], partial["ref"]
    text = "<s> and </s> or <pad>, <unk>, <mask> as text"
    assert tok(text)["input_ids"][:2] == [0, 0] and ref.encode(text)[1] != 0
    assert tok(text, split_special_tokens=True)["input_ids"] == ref.encode(text)


def test_num_embeddings_must_equal_the_dictionary_size(partial):
    folder, size = partial["folder"], len(partial["ref"].symbols)
    files = (partial["dict_txt"], folder / "encoder.json", folder / "vocab.bpe")
    assert len(d2v.tokenizer_from_fairseq(*files, num_embeddings=size)) == size
    for wrong in (size - 1, size + 7, 50265):
        with pytest.raises(ValueError) as e:
            d2v.tokenizer_from_fairseq(*files, num_embeddings=wrong)
        msg = str(e.value)
        assert str(size) in msg and str(wrong) in msg and str(partial["dict_txt"]) in msg and "encoder.json" in msg


def test_save_pretrained_reloads_with_autotokenizer(partial, full, tmp_path):
    strings = STRINGS + random_strings(50, seed=4)
    for name, case in (("partial", partial), ("full", full)):
        case["tok"].save_pretrained(tmp_path / name)
        back = AutoTokenizer.from_pretrained(tmp_path / name)
        assert type(back) is type(case["tok"])
        assert back(strings)["input_ids"] == [case["ref"].encode(s) for s in strings]
        assert back("a", "b")["input_ids"] == case["ref"].encode("a", "b")
        assert back("The zebra <mask>")["input_ids"] == case["ref"].fill_mask_tokens("The zebra <mask>")
        assert (back.pad_token_id, back.mask_token_id, len(back)) == (1, case["ref"].mask_idx, len(case["ref"].symbols))
        assert back.model_max_length == case["tok"].model_max_length


@pytest.mark.slow
def test_the_full_dictionary_tokenizer_loads_without_this_package(full, tmp_path):
    """A tokenizer for the released dictionary is plain tokenizer.json: transformers alone reloads it."""
    full["tok"].save_pretrained(tmp_path)
    code = ("import sys, json; from transformers import AutoTokenizer; "
            f"t = AutoTokenizer.from_pretrained({str(tmp_path)!r}); "
            "assert 'modeling_data2vec_unified' not in sys.modules; "
            "print(json.dumps(t(sys.argv[1:])['input_ids']))")
    texts = ["Hello world", "Café 🙂 zebra 77", ""]
    out = subprocess.run([sys.executable, "-c", code, *texts], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [full["ref"].encode(s) for s in texts]


def test_dictionary_lines_as_fairseq_reads_them(gpt2_files, tmp_path):
    """Counts, the #fairseq:overwrite flag (the word moves to a new row, the old row stays), a dict.txt that has
    <mask> already (MaskedLMTask's add_symbol then adds nothing), and the errors, which name the line."""
    folder, encoder, _ = gpt2_files
    files = (folder / "encoder.json", folder / "vocab.bpe")
    the = encoder["Ġthe"]
    dict_txt = tmp_path / "dict.txt"
    lines = [f"{i} {100 - i % 50}" for i in range(0, 300, 2) if i != the] + [f"{the} 5", f"{the} 7 #fairseq:overwrite",
                                                                    "<mask> 0", "madeupword0000 0"]
    dict_txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ref = FairseqReference(dict_txt, *files)
    tok = d2v.tokenizer_from_fairseq(dict_txt, *files)
    assert ref.indices[str(the)] == 4 + len(lines) - 3 and ref.mask_idx == 4 + len(lines) - 2
    assert len(tok) == len(ref.symbols) == 4 + len(lines)
    for s in STRINGS[:20] + ["the the theory"]:
        assert tok(s)["input_ids"] == ref.encode(s), s
    assert tok.mask_token_id == ref.mask_idx

    for bad, lineno, what in [(["1 5", "2", "3 4"], 2, "expected"), (["1 5", "2 4", "3 many"], 3, "not an integer"),
                              (["1 5", "2 4", "1 3"], 3, "already row 4 \\(line 1\\)"),
                              (["<unk> 5"], 1, "special"), (["1 5", "", "2 4"], 2, "expected"),
                              (["1 5", "2 #fairseq:overwrite"], 2, "expected")]:
        dict_txt.write_text("\n".join(bad) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=f"dict.txt, line {lineno}: .*{what}"):
            d2v.tokenizer_from_fairseq(dict_txt, *files)


def test_rows_whose_text_is_also_a_gpt2_token(gpt2_files, tmp_path):
    """A dict.txt line that is not a GPT-2 id but reads like a GPT-2 token's text (here "he", whose GPT-2 id has no
    line) is a row no text reaches; it keeps a token of its own and the GPT-2 token still becomes <unk>."""
    folder, encoder, _ = gpt2_files
    files = (folder / "encoder.json", folder / "vocab.bpe")
    assert "he" in encoder
    dict_txt = tmp_path / "dict.txt"
    ids = [i for i in encoder.values() if i != encoder["he"]]
    dict_txt.write_text("".join(f"{i} 9\n" for i in ids[:200]) + "he 3\n" + "".join(f"{i} 1\n" for i in ids[200:]),
                        encoding="utf-8")
    ref = FairseqReference(dict_txt, *files)
    tok = d2v.tokenizer_from_fairseq(dict_txt, *files)
    assert len(tok) == len(ref.symbols) and ref.indices["he"] == 204
    assert tok.convert_ids_to_tokens(204).startswith("he<row 204>")
    assert sorted(tok.get_vocab().values()) == list(range(len(ref.symbols)))
    for s in STRINGS + ["he the hello she"]:
        assert tok(s)["input_ids"] == ref.encode(s), s
    assert 3 in ref.encode("he the hello she")


def test_merges_file_errors_name_the_line(gpt2_files, tmp_path):
    folder, _, merges = gpt2_files
    bpe = tmp_path / "vocab.bpe"
    bpe.write_text("#version: 0.2\n" + f"{merges[0][0]} {merges[0][1]}\n" + "a b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.bpe, line 3"):
        read_gpt2_bpe(folder / "encoder.json", bpe)
    bpe.write_text("#version: 0.2\nq9 w8\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.bpe, line 2: 'q9'"):
        read_gpt2_bpe(folder / "encoder.json", bpe)
    # blank lines rank nothing in fairseq either; the text after the last newline is dropped as fairseq drops it
    bpe.write_text("#version: 0.2\n\n" + "".join(f"{a} {b}\n" for a, b in merges[:3]) + "q9 w8", encoding="utf-8")
    assert read_gpt2_bpe(folder / "encoder.json", bpe)[1] == merges[:3]


@pytest.mark.slow
def test_the_function_loads_on_first_use():
    code = ("import sys, modeling_data2vec_unified as d; print('tokenizer_from_fairseq' in vars(d)); "
            "print(callable(d.tokenizer_from_fairseq), 'tokenizer_from_fairseq' in dir(d))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
