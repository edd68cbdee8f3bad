"""Two fixes that let Keras 3's `model.fit` train under tf.distribute.MultiWorkerMirroredStrategy.

Keras 3.15's TensorFlow trainer breaks under more than one worker
(keras-team/keras#20585, open): before the first step it all-reduces a whole
input batch only to learn its shapes (`_maybe_symbolic_build`), and after every
step it reduces scalar metric values along axis 0 (`reduce_per_replica`); with
several workers both go through collective reduce ops that reject them
("Attempt to convert a value (PerReplica...)", "Invalid reduction dimension 0").

`apply()` replaces just those two steps, in this process only and only when
training with several workers (components/train.py calls it next to creating
the strategy):

- the symbolic build reads this worker's first local batch (shapes and dtypes
  are all it needs; every worker's batch has the same spec);
- a "mean" reduction of per-replica values is the mean over all replicas of
  all workers (axis=None), which for the scalar logs is what Keras means.

Remove this module when Keras fixes the issue; tests/test_multiworker.py
trains two workers end to end and would show the breakage again.
"""

from __future__ import annotations

_applied = False


def apply() -> None:
    """Patch Keras' TensorFlow trainer for multi-worker training (idempotent)."""
    global _applied
    if _applied:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(_first_local(self.distribute_strategy), next(batches))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _first_local(strategy):
        def first(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        return first

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _applied = True
