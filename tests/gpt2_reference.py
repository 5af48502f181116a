"""A GPT-2 byte-level BPE and fairseq's dictionary encoding, written from fairseq's sources independently of the
package (`fairseq/data/encoders/gpt2_bpe_utils.py`, `fairseq/data/dictionary.py`, `fairseq/tokenizer.py`): the
reference `tests/data/test_fairseq_text.py` and `tests/conversion/test_fairseq_conversion.py` compare the package's
tokenizers with."""

import json
import re
from collections import Counter

import regex  # what fairseq's gpt2_bpe_utils uses for \p{L} / \p{N}

GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return {(a, b) for a, b in zip(word, word[1:])}


class FairseqReference:
    """fairseq's GPT2BPE + Dictionary + RobertaHubInterface.encode, transcribed."""

    def __init__(self, dict_txt, encoder_json, vocab_bpe):
        with open(encoder_json) as f:
            self.encoder = json.load(f)
        with open(vocab_bpe, encoding="utf-8") as f:
            bpe_merges = [tuple(m.split()) for m in f.read().split("\n")[1:-1]]
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.byte_encoder = bytes_to_unicode()
        # Dictionary(): <s>, <pad>, </s>, <unk>; Dictionary.add_from_file; MaskedLMTask: add_symbol("<mask>")
        self.symbols, self.indices = [], {}
        for s in ("<s>", "<pad>", "</s>", "<unk>"):
            self.add_symbol(s)
        self.unk_index = 3
        with open(dict_txt, encoding="utf-8") as f:
            for line in f.readlines():
                line, field = line.rstrip().rsplit(" ", 1)
                overwrite = field == "#fairseq:overwrite"
                if overwrite:
                    line, field = line.rsplit(" ", 1)
                int(field)
                assert line not in self.indices or overwrite
                self.add_symbol(line, overwrite=overwrite)
        self.mask_idx = self.add_symbol("<mask>")

    def add_symbol(self, word, overwrite=False):
        if word in self.indices and not overwrite:
            return self.indices[word]
        self.indices[word] = len(self.symbols)
        self.symbols.append(word)
        return self.indices[word]

    def bpe(self, token):
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        return " ".join(word)

    def gpt2_tokens(self, text):
        out = []
        for token in regex.findall(GPT2_PATTERN, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            out.extend(self.bpe(token).split(" "))
        return out

    def gpt2_encode(self, text):  # GPT2BPE.encode: " ".join(map(str, ids))
        return " ".join(str(self.encoder[t]) for t in self.gpt2_tokens(text))

    def encode_line(self, line):  # Dictionary.encode_line(..., add_if_not_exist=False, append_eos=False)
        words = re.sub(r"\s+", " ", line).strip().split()  # tokenize_line
        return [self.indices.get(w, self.unk_index) for w in words]

    def encode(self, sentence, *addl_sentences):  # RobertaHubInterface.encode
        bpe_sentence = "<s> " + self.gpt2_encode(sentence) + " </s>"
        for s in addl_sentences:
            bpe_sentence += " </s>"
            bpe_sentence += " " + self.gpt2_encode(s) + " </s>"
        return self.encode_line(bpe_sentence)

    def fill_mask_tokens(self, masked_input):  # RobertaHubInterface.fill_mask, up to the model call
        spans = masked_input.split("<mask>")
        spans_bpe = " <mask> ".join(self.gpt2_encode(s.rstrip()) for s in spans).strip()
        return self.encode_line("<s> " + spans_bpe + " </s>")


CORPUS = """The quick brown fox jumps over the lazy dog. It's 2024 and we'll see what they've done; I'm sure
you'd like it. Hello world! Hello, Hello? hello hello HELLO. The the the there their they them these those.
data2vec learns representations of speech, images and text with the same method: predict the teacher's
averaged layers from a masked view. Numbers: 1 12 123 1234 12345 3.14159 2.71828 100% 50/50 1,000,000.
Café naïve résumé déjà vu — façade, coöperate; über Straße, Grüße aus München. Ελληνικά κείμενα, русский текст.
日本語のテキストと中文文本。 Emoji 🙂🙂 and symbols ©®™ §¶ … «quotes» “curly” ‘single’.
    indented lines	with tabs	and   runs   of   spaces
new
lines

blank lines above. don't won't can't shouldn't isn't aren't wasn't weren't.
"""


def learn_merges(text, n_merges):
    """A plain byte-level BPE learner (most frequent pair, ties by the pair's text), for GPT-2-shaped files."""
    b2u = bytes_to_unicode()
    words = Counter("".join(b2u[b] for b in t.encode("utf-8")) for t in regex.findall(GPT2_PATTERN, text))
    splits = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            for p in zip(splits[w], splits[w][1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        for w in words:
            s, out, i = splits[w], [], 0
            while i < len(s):
                if i < len(s) - 1 and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return merges
