"""Keras runner, on the TensorFlow backend: TF's tensors, tape and devices (the TF
runner's), Keras' own ops for the flush-to-zero probe, and Keras' settings in versions."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from audit.runners.tf import TFRunner


class KerasRunner(TFRunner):
    name = "keras"
    modules = ("tensorflow", "keras")

    def load(self) -> ModuleType:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        self._tf = super().load()  # configure TF (threads, logging) before keras imports it
        import keras

        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise ImportError(
                f"keras backend is {backend!r}; the keras subjects audit the TensorFlow "
                "backend (unset KERAS_BACKEND or set it to 'tensorflow')")
        return keras

    @property
    def tf(self) -> ModuleType:
        self.module  # noqa: B018 -- loads keras, which sets self._tf
        return self._tf

    def versions(self) -> dict[str, Any]:
        keras = self.module
        return {**super().versions(), "keras": keras.__version__,
                "keras_backend": keras.backend.backend(),
                "keras_epsilon": keras.backend.epsilon()}

    def multiply(self, a: Any, b: Any) -> Any:
        return self.module.ops.multiply(a, b)


RUNNER = KerasRunner()
