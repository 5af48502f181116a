"""The tokenizer of a fairseq data2vec text checkpoint, as a transformers tokenizer whose ids are the checkpoint's
embedding rows.

fairseq encodes text in two steps (docs/fairseq-text-tokenizer.md has the sources):

1. GPT-2's byte-level BPE (`fairseq/data/encoders/gpt2_bpe_utils.py`, `Encoder.encode`) turns the text into GPT-2
   token ids (`encoder.json`, merges ranked by their line in `vocab.bpe`), written as decimal strings;
2. fairseq's `Dictionary` (`fairseq/data/dictionary.py`) looks each of those strings up: rows 0-3 are `<s>`, `<pad>`,
   `</s>`, `<unk>`, then one row per `dict.txt` line in file order, and the masked LM task appends `<mask>`. A GPT-2
   id that has no line becomes `<unk>` (3). A sentence is `<s> ... </s>`, a pair `<s> A </s> </s> B </s>`.

`tokenizer_from_fairseq` builds a `tokenizers` byte-level BPE with GPT-2's merges whose vocabulary gives every GPT-2
token its dictionary row. When `dict.txt` lacks some GPT-2 tokens (a dictionary built from one's own data), those
tokens cannot all share id 3 inside a BPE model (its merges are keyed by ids, and its saved vocabulary holds one text
per id), so they get ids past the dictionary and `FairseqDictionaryTokenizer` turns them into `<unk>`; it is
registered with AutoTokenizer by `import modeling_data2vec_unified`. With the released data2vec dictionary (every
GPT-2 token has a line) the result is a plain `PreTrainedTokenizerFast` that loads anywhere.

Importing this module costs the standard library and transformers' tokenizer base class; `tokenizers` is imported
when a tokenizer is built.
"""

from __future__ import annotations

import json
import os

from transformers import PreTrainedTokenizerFast

# fairseq/data/dictionary.py, Dictionary.__init__: bos, pad, eos, unk are added first, in this order
BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# fairseq/tasks/masked_lm.py, MaskedLMTask.__init__: self.dictionary.add_symbol("<mask>") after loading dict.txt
MASK = "<mask>"
_OVERWRITE = "#fairseq:overwrite"

__all__ = ["FairseqDictionary", "FairseqDictionaryTokenizer", "read_gpt2_bpe", "tokenizer_from_fairseq"]


class FairseqDictionary:
    """The rows of a fairseq `Dictionary` as `Dictionary.load(dict.txt)` and the masked LM task leave them.

    `symbols[i]` is row i's text, `indices` maps a text to its row (the last row written for it, as fairseq's
    `add_symbol(..., overwrite=True)` does), and `source` names the file for error messages.
    """

    def __init__(self, source: str = "dict.txt"):
        self.source = source
        self.symbols: list[str] = []
        self.indices: dict[str, int] = {}
        self._line_of: dict[str, int] = {}
        self.mask_index: int | None = None
        self.mask_appended = False
        for word in (BOS, PAD, EOS, UNK):
            self.add_symbol(word)
        self.nspecial = len(self.symbols)

    def add_symbol(self, word: str, overwrite: bool = False) -> int:
        """fairseq's `Dictionary.add_symbol`: an existing word keeps its row unless `overwrite`; otherwise a new row."""
        if word in self.indices and not overwrite:
            return self.indices[word]
        self.indices[word] = len(self.symbols)
        self.symbols.append(word)
        return self.indices[word]

    def __len__(self) -> int:
        return len(self.symbols)

    @classmethod
    def load(cls, path: str | os.PathLike, add_mask: bool = True) -> "FairseqDictionary":
        """`Dictionary.load(path)` (`Dictionary.add_from_file`), then `add_symbol("<mask>")` as the masked LM and
        sentence prediction tasks do. No padding to a multiple of 8 happens here: fairseq pads only in
        `Dictionary.finalize` (when a dictionary is built from data), and the madeupword rows it adds are written
        into dict.txt, so they come back as ordinary lines."""
        path = os.fspath(path)
        d = cls(source=path)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text (fairseq reads dict.txt as UTF-8): {e}") from None
        for lineno, raw in enumerate(lines, start=1):
            d._add_line(raw, lineno)
        if add_mask:
            d.mask_appended = MASK not in d.indices
            d.mask_index = d.add_symbol(MASK)
        return d

    def _add_line(self, raw: str, lineno: int) -> None:
        # Dictionary.add_from_file: line.rstrip().rsplit(" ", 1), an optional "#fairseq:overwrite" flag, int(count)
        where = f"{self.source}, line {lineno}"
        line = raw.rstrip()
        fields = line.rsplit(" ", 1)
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<token> <count> [{_OVERWRITE}]', got {line!r}")
        word, field = fields
        overwrite = field == _OVERWRITE
        if overwrite:
            fields = word.rsplit(" ", 1)
            if len(fields) != 2:
                raise ValueError(f"{where}: expected '<token> <count> {_OVERWRITE}', got {line!r}")
            word, field = fields
        try:
            int(field)
        except ValueError:
            raise ValueError(f"{where}: the count {field!r} is not an integer "
                             f"(expected '<token> <count> [{_OVERWRITE}]')") from None
        if word in self.indices and not overwrite:
            first = self._line_of.get(word)
            was = f"line {first}" if first is not None else "one of fairseq's four special symbols"
            raise ValueError(f"{where}: {word!r} is already row {self.indices[word]} ({was}); fairseq refuses a "
                             f"duplicate unless its line ends with {_OVERWRITE}")
        self.add_symbol(word, overwrite=overwrite)
        self._line_of[word] = lineno


def read_gpt2_bpe(encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
                  ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's `encoder.json` (token text -> GPT-2 id) and its merges in rank order, read as fairseq's
    `gpt2_bpe_utils.get_encoder` reads them: `vocab.bpe` split at "\\n", its first line (the "#version" header)
    and the text after its last newline dropped, each merge `tuple(line.split())`, and a pair listed twice ranked
    by its last line (`dict(zip(bpe_merges, range(...)))`)."""
    encoder_json, vocab_bpe = os.fspath(encoder_json), os.fspath(vocab_bpe)
    with open(encoder_json, encoding="utf-8") as f:
        try:
            encoder = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{encoder_json} is not JSON: {e}") from None
    if not isinstance(encoder, dict) or not all(isinstance(k, str) and type(v) is int for k, v in encoder.items()):
        raise ValueError(f"{encoder_json} should map each GPT-2 token's text to its integer id")
    if len(set(encoder.values())) != len(encoder):
        raise ValueError(f"{encoder_json} gives two tokens the same GPT-2 id")
    with open(vocab_bpe, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:-1]
    ranks: dict[tuple[str, str], int] = {}
    for rank, line in enumerate(lines):
        pair = tuple(line.split())
        if not pair:  # a blank line: fairseq ranks an empty tuple, which no pair of symbols ever matches
            continue
        lineno = rank + 2
        if len(pair) != 2:
            raise ValueError(f"{vocab_bpe}, line {lineno}: a merge is two tokens separated by a space, got {line!r}")
        for piece in (*pair, pair[0] + pair[1]):
            if piece not in encoder:
                raise ValueError(f"{vocab_bpe}, line {lineno}: {piece!r} (from the merge {line!r}) is not in "
                                 f"{encoder_json}; these files do not belong together")
        ranks[pair] = rank
    return encoder, sorted(ranks, key=ranks.__getitem__)


class FairseqDictionaryTokenizer(PreTrainedTokenizerFast):
    """A GPT-2 byte-level BPE tokenizer over a fairseq dictionary that lacks some GPT-2 tokens.

    The backend gives those tokens ids from `fairseq_dictionary_size` on (a BPE model needs one id per token text
    for its merges and its saved vocabulary); every id this class returns past the dictionary becomes `<unk>` (3),
    which is what fairseq's `Dictionary.index` gives them. `len()` and `vocab_size` are the dictionary's size, and
    the vocabulary cannot grow (new tokens would need embedding rows the checkpoint does not have).
    Without `fairseq_dictionary_size` it is a plain `PreTrainedTokenizerFast`.
    """

    @property
    def fairseq_dictionary_size(self) -> int | None:
        return getattr(self, "init_kwargs", {}).get("fairseq_dictionary_size")

    def _rows(self, ids: list[int]) -> list[int]:
        size = self.fairseq_dictionary_size
        if size is None:
            return ids
        return [i if i < size else UNK_ID for i in ids]

    def _convert_encoding(self, *args, **kwargs):
        encoding_dict, encodings = super()._convert_encoding(*args, **kwargs)
        encoding_dict["input_ids"] = [self._rows(ids) for ids in encoding_dict["input_ids"]]
        return encoding_dict, encodings

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        return self._rows(super()._encode_without_added_tokens(text))

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        index = super()._convert_token_to_id_with_added_voc(token)
        return index if index is None else self._rows([index])[0]

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        if self.fairseq_dictionary_size is not None:
            new = [str(t) for t in new_tokens if self._tokenizer.token_to_id(str(t)) is None]
            if new:
                raise ValueError(f"cannot add {new}: this tokenizer's ids are the rows of a fairseq dictionary of "
                                 f"{self.fairseq_dictionary_size} rows and new tokens would need rows the "
                                 f"checkpoint does not have")
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def get_vocab(self) -> dict[str, int]:
        vocab = super().get_vocab()
        size = self.fairseq_dictionary_size
        return vocab if size is None else {t: i for t, i in vocab.items() if i < size}

    @property
    def vocab_size(self) -> int:
        size = self.fairseq_dictionary_size
        return super().vocab_size if size is None else size

    def __len__(self) -> int:
        size = self.fairseq_dictionary_size
        return super().__len__() if size is None else size


def tokenizer_from_fairseq(
    dict_txt: str | os.PathLike,
    encoder_json: str | os.PathLike,
    vocab_bpe: str | os.PathLike,
    *,
    num_embeddings: int | None = None,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """A transformers tokenizer giving the ids a fairseq data2vec (or RoBERTa) text checkpoint was trained on.

    `dict_txt` is the checkpoint's fairseq dictionary, `encoder_json` / `vocab_bpe` GPT-2's BPE files.
    `num_embeddings` (the checkpoint's embedding rows), when given, must equal the dictionary's size: 4 specials,
    one row per dict.txt line (madeupword padding included), and `<mask>`. `model_max_length` is stored in the
    tokenizer (e.g. 512 for data2vec's `tokens_per_sample`).

    The result encodes like fairseq's `RobertaHubInterface.encode`: `<s>`, the dictionary rows of GPT-2's BPE of
    the text, `</s>`; a pair is `<s> A </s> </s> B </s>` (the sentence prediction task's `init_token` 0 and
    `separator_token` 2). Special tokens written in the text (`<mask>`, `<s>`, ...) are read as such, as in
    transformers' RoBERTa (`split_special_tokens=True` encodes them as plain text, as fairseq's `encode` does);
    `<mask>` takes the space before it, as fairseq's `fill_mask` does. Save it into a model folder with
    `tokenizer_from_fairseq(...).save_pretrained(folder)`; `AutoTokenizer.from_pretrained(folder)` reloads it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    dictionary = FairseqDictionary.load(dict_txt)
    encoder, merges = read_gpt2_bpe(encoder_json, vocab_bpe)
    size = len(dictionary)
    if num_embeddings is not None and num_embeddings != size:
        from_file = size - dictionary.nspecial - dictionary.mask_appended
        raise ValueError(
            f"{os.fspath(dict_txt)} gives a dictionary of {size} rows (fairseq's {dictionary.nspecial} specials, "
            f"{from_file} from its lines{', then <mask>' if dictionary.mask_appended else ''}) but the checkpoint's "
            f"embedding has {num_embeddings} rows, so the ids would not be its rows. Use the dict.txt the checkpoint "
            f"was trained with (the one in its task.data folder; the masked LM task appends <mask> to it) together "
            f"with its encoder.json / vocab.bpe (given: {os.fspath(encoder_json)}, {os.fspath(vocab_bpe)})")

    # every GPT-2 token's text -> its dictionary row (fairseq looks the decimal GPT-2 id up), in GPT-2 id order
    vocab: dict[str, int] = {}
    named_rows: set[int] = set()
    missing: list[str] = []
    for text, gpt2_id in sorted(encoder.items(), key=lambda kv: kv[1]):
        row = dictionary.indices.get(str(gpt2_id))
        if row is None:
            missing.append(text)
        else:
            vocab[text] = row
            named_rows.add(row)
    # rows that no GPT-2 token reaches keep their own text (specials, madeupwords, <mask>, rows replaced by
    # #fairseq:overwrite), so that every row has a token and the saved vocabulary has no holes
    specials = {BOS_ID: BOS, PAD_ID: PAD, EOS_ID: EOS, UNK_ID: UNK, dictionary.mask_index: MASK}
    for row, symbol in enumerate(dictionary.symbols):
        if row in named_rows:
            continue
        if symbol in encoder or symbol in vocab:
            if row in specials and symbol in encoder:
                raise ValueError(f"the GPT-2 token {symbol!r} ({os.fspath(encoder_json)}) has the text of fairseq's "
                                 f"special symbol {symbol}, which a transformers tokenizer cannot tell apart")
            n = 0
            while (name := f"{symbol}<row {row}>{'*' * n}") in encoder or name in vocab:
                n += 1
            symbol = name
        vocab[symbol] = row
    # GPT-2 tokens without a dictionary row: ids past the dictionary, turned into <unk> by FairseqDictionaryTokenizer
    for i, text in enumerate(missing):
        vocab[text] = size + i

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=False, byte_fallback=False,
                                   ignore_merges=False, dropout=None))
    # GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+, no prefix space
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    mask = AddedToken(MASK, lstrip=True, rstrip=False, normalized=False, special=True)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (BOS, PAD, EOS, UNK)] + [mask])

    kwargs = dict(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, sep_token=EOS, cls_token=BOS,
                  unk_token=UNK, pad_token=PAD, mask_token=mask, padding_side="right",
                  model_input_names=["input_ids", "attention_mask"])  # fairseq has no segment embeddings
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    if missing:
        return FairseqDictionaryTokenizer(fairseq_dictionary_size=size, **kwargs)
    return PreTrainedTokenizerFast(**kwargs)
