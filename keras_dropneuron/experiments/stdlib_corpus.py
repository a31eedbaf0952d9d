"""The Python standard library's own source as a language-modelling corpus, nothing downloaded.

`load_stdlib_corpus` reads a deterministic subset of the installed standard
library's `*.py` files and splits it by file; `train_tokenizer` trains a
SentencePiece model on the training files; `token_windows` cuts the token
stream into fixed-length windows. Only `sentencepiece` is needed (keras-hub's
tokenizers wrap the same proto).
"""

import dataclasses
import io
import pathlib
import platform
import sysconfig

import numpy as np

# Test suites (large, repetitive) and third-party code stay out of the corpus.
EXCLUDED_PARTS = frozenset({"test", "tests", "idle_test", "site-packages"})


@dataclasses.dataclass
class Corpus:
    """Source files as text, split by file.

    Attributes:
        train: Texts of the training files.
        validation: Texts of the validation files.
        train_files: Their paths, relative to `root`.
        validation_files: Their paths, relative to `root`.
        root: The standard library's directory.
        python_version: The interpreter's version (the corpus is its source).
    """

    train: list[str]
    validation: list[str]
    train_files: list[str]
    validation_files: list[str]
    root: str
    python_version: str

    def info(self) -> dict:
        """The corpus's description as JSON values: version, files, characters."""
        return {
            "python_version": self.python_version,
            "root": self.root,
            "train_files": len(self.train_files),
            "validation_files": len(self.validation_files),
            "train_chars": sum(map(len, self.train)),
            "validation_chars": sum(map(len, self.validation)),
        }


def stdlib_files(root: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """The standard library's `*.py` files, sorted, without tests and site-packages."""
    root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(
        path
        for path in root.rglob("*.py")
        if not EXCLUDED_PARTS & set(path.relative_to(root).parts)
    )


def load_stdlib_corpus(
    max_chars: int, stride: int = 2, validation_every: int = 10, root: str | None = None
) -> Corpus:
    """Reads every `stride`-th sorted file up to `max_chars`, some held out for validation.

    Args:
        max_chars: Characters to read at most (the first file always is).
        stride: Take every `stride`-th file of the sorted list, so the subset
            spans the library instead of its first packages. Defaults to `2`.
        validation_every: Every `validation_every`-th file taken (the first
            included) goes to validation. Defaults to `10`.
        root: The library's directory; `None` is this interpreter's.
            Defaults to `None`.

    Returns:
        The `Corpus`.

    Raises:
        ValueError: If `max_chars`, `stride` or `validation_every` is below 1
            (`validation_every` below 2), or no file is found.
    """
    for name, value, least in (
        ("max_chars", max_chars, 1),
        ("stride", stride, 1),
        ("validation_every", validation_every, 2),
    ):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"Argument `{name}` must be an int >= {least}. Received: {value!r}")
    root = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)[::stride]
    if not files:
        raise ValueError(f"No Python files found under {root}.")
    corpus = Corpus([], [], [], [], str(root), platform.python_version())
    total = 0
    for index, path in enumerate(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        if total and total + len(text) > max_chars:
            break
        total += len(text)
        held_out = index % validation_every == 0
        (corpus.validation if held_out else corpus.train).append(text)
        name = str(path.relative_to(root))
        (corpus.validation_files if held_out else corpus.train_files).append(name)
    return corpus


def train_tokenizer(texts: list[str], vocabulary_size: int) -> bytes:
    """Trains a SentencePiece unigram model on the lines of `texts`; returns its proto.

    Whitespace is kept as it is (identity normalization, no collapsing of
    spaces, no dummy prefix): indentation is syntax in Python. Characters
    unseen in training, the newline included, fall back to byte pieces, so
    whole files encode and decode exactly.

    Args:
        texts: Training texts.
        vocabulary_size: Pieces, the 256 byte pieces and 3 specials included.

    Returns:
        The serialized model, for `sentencepiece.SentencePieceProcessor(model_proto=...)`
        or `keras_hub.tokenizers.SentencePieceTokenizer(proto=...)`.
    """
    import sentencepiece

    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=proto,
        vocab_size=vocabulary_size,
        model_type="unigram",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        byte_fallback=True,
        split_digits=True,
        max_sentencepiece_length=16,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=2,
        num_threads=2,
        minloglevel=2,
        shuffle_input_sentence=False,
    )
    return proto.getvalue()


def encode(proto: bytes, texts: list[str]) -> np.ndarray:
    """The texts' tokens, one stream (each file's tokens, then the end-of-text id 2)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    ids = [token for text in processor.encode(texts) for token in [*text, 2]]
    return np.asarray(ids, dtype="int32")


def decode(proto: bytes, ids) -> str:
    """The text of token ids (end-of-text ids dropped)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    return processor.decode([int(i) for i in ids if int(i) != 2])


def token_windows(ids: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows of `length + 1` tokens: inputs and shifted targets.

    The tokens after the last whole window are dropped.
    """
    count = len(ids) // (length + 1)
    return ids[: count * (length + 1)].reshape(count, length + 1)
