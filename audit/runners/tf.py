"""TensorFlow runner. TF tensors have no views: "strided" is a tf.strided_slice of a
larger tensor and "transposed" a tf.transpose, so kernels see fresh dense buffers and
2-D shapes; the layouts still exercise those producer ops and shapes."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from audit import dtypes as _dtypes
from audit import layouts
from audit.runners import MIN_NORMAL32, TINY32, CallFn, Runner


class TFRunner(Runner):
    name = "tf"
    modules = ("tensorflow",)

    def load(self) -> ModuleType:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no absl / oneDNN banners
        import tensorflow as tf

        # TF otherwise sizes its pools to every core; several workers share the machine
        intra = self.threads or max(1, min(4, os.cpu_count() or 1))
        inter = self.threads or 2
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:
            pass  # the TF runtime was already initialised; keep its pools
        return tf

    @property
    def tf(self) -> ModuleType:
        return self.module

    def device_reason(self, device: str) -> str | None:
        if device == "cpu":
            return None
        tf = self.tf
        if not tf.config.list_physical_devices("GPU"):
            return f"no GPU visible to TensorFlow {tf.__version__} (tf.config has no 'GPU' device)"
        return None

    def versions(self) -> dict[str, Any]:
        tf = self.tf
        return {"tf": tf.__version__,
                "tf_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}

    def multiply(self, a: Any, b: Any) -> Any:
        """The framework's own elementwise product (keras: keras.ops.multiply)."""
        return self.tf.math.multiply(a, b)

    def ftz_products(self, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tf = self.tf
        with tf.device(_device(device)):
            sub = tf.fill([33], tf.constant(TINY32, tf.float32))
            norm = tf.fill([33], tf.constant(MIN_NORMAL32, tf.float32))
            one, big, half = (tf.constant(v, tf.float32) for v in (1.0, 2.0**24, 0.5))
            return tuple(self.multiply(a, b).numpy()
                         for a, b in ((sub, one), (sub, big), (norm, half)))

    execution_reasons: ClassVar[dict[str, str]] = {
        "autocast_bfloat16": "TensorFlow has no autocast for a loss call: mixed precision is a "
                             "Keras layer dtype policy (mixed_bfloat16); a loss computes in the "
                             "dtype of its inputs",
        "autocast_float16": "TensorFlow has no autocast for a loss call: mixed precision is a "
                            "Keras layer dtype policy (mixed_float16); a loss computes in the "
                            "dtype of its inputs",
    }

    def evaluate(self, call: CallFn, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, execution: str = "eager", key: Any = None) -> np.ndarray:
        tf = self.tf
        if execution == "compiled":  # XLA; reduce_retracing: one trace for every length
            call = self.compiled(key, lambda c=call: tf.function(
                c, jit_compile=True, reduce_retracing=True))
        with tf.device(_device(device)):
            bases = [None if v is None else tf.constant(layouts.exact_base(v, layout, dtype))
                     for v in arrays]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                if grad:
                    tape.watch(bases[0])
                views = [None if b is None else _view(tf, b, layout) for b in bases]
                loss = call(*views, reduction)
                total = tf.reduce_sum(loss) if reduction == "none" else loss
            self.output_dtype = loss.dtype.name
            if not grad:
                return layouts.result(_dtypes.to_float64(loss.numpy()), reduction)
            gradient = tape.gradient(total, bases[0])
        if gradient is None:
            raise RuntimeError("TensorFlow returned no gradient for the input")
        return layouts.unlayout(_dtypes.to_float64(tf.convert_to_tensor(gradient).numpy()), layout)


def _device(device: str) -> str:
    return "/GPU:0" if device == "cuda" else "/CPU:0"


def _view(tf: ModuleType, base: Any, layout: str) -> Any:
    if layout == "strided":
        return tf.strided_slice(base, [0], [base.shape[0]], [2])
    if layout == "transposed":
        return tf.transpose(base)
    return base


RUNNER = TFRunner()
