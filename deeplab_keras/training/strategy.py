"""tf.distribute strategies for training: local GPUs, or several hosts.

- Default: `tf.distribute.MirroredStrategy` over every visible GPU (one CPU
  replica when there is none). Each step the global batch is split evenly over
  the replicas and the gradients are all-reduced (summed; the loss divides by
  the global valid-pixel count, see `losses`).
- `multi_worker=True`: `tf.distribute.MultiWorkerMirroredStrategy`, configured by
  the `TF_CONFIG` environment variable of every worker, e.g. for worker 0 of 2:

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                  "task": {"type": "worker", "index": 0}}'

  Worker 0 is the chief: it writes checkpoints, logs and exports; the run
  directory must be visible to all workers (a shared filesystem).

To exercise the mirrored path on a CPU-only machine, split the CPU into logical
devices before TensorFlow initialises (`split_cpu(2)`) and pass the devices.

Example:
    >>> strategy = make_strategy()
    >>> with strategy.scope():
    ...     model = build_model("vgg16_largefov")
"""

import json
import os

import tensorflow as tf


def split_cpu(num_devices):
    """Expose the CPU as `num_devices` logical devices (call before any TF op runs).

    Returns:
      The logical CPU device names, e.g. ["/cpu:0", "/cpu:1"].

    Raises:
      RuntimeError: TensorFlow already initialised its devices.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive int. Received: num_devices={num_devices!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as e:
        raise RuntimeError("split_cpu must run before TensorFlow initialises its devices "
                           f"(before the first op): {e}") from None
    return [f"/cpu:{i}" for i in range(num_devices)]


def read_tf_config():
    """The parsed `TF_CONFIG` (dict), with a clear error when it is missing or malformed."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("--multi-worker needs the TF_CONFIG environment variable (cluster and "
                         "task of this worker), e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                         "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}'. Received: TF_CONFIG unset")
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}). Received: TF_CONFIG={raw!r}") from None
    if not isinstance(cfg, dict) or "cluster" not in cfg or "task" not in cfg:
        raise ValueError(f"TF_CONFIG must have 'cluster' and 'task'. Received: TF_CONFIG={raw!r}")
    return cfg


def make_strategy(multi_worker=False, devices=None):
    """The distribution strategy of a training run.

    Args:
      multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.
      devices: explicit device list for MirroredStrategy (e.g. logical CPUs); None:
        all visible GPUs, or the CPU when there is none.

    Returns:
      A `tf.distribute.Strategy`.
    """
    if multi_worker:
        if devices is not None:
            raise ValueError(f"devices cannot be combined with multi_worker. Received: devices={devices!r}")
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy(devices=devices)


def is_chief(strategy):
    """Whether this process writes checkpoints / logs / exports (worker 0 or single host)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None) \
            or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def per_replica_batch(global_batch, strategy, accumulate=1):
    """Images per replica (per optimizer step); the global batch must split evenly.

    Args:
      global_batch: the effective batch of one optimizer step.
      strategy: the distribution strategy.
      accumulate: micro-batches per step; each replica's share must split into them.

    Raises:
      ValueError: global_batch not a multiple of replicas x accumulate.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % (replicas * accumulate):
        raise ValueError(f"batch_size must be a multiple of the number of replicas ({replicas}) "
                         f"times accumulate ({accumulate}) so that every replica gets the same "
                         f"share of every micro-batch. Received: batch_size={global_batch}")
    return global_batch // replicas


def distribute_options(dataset):
    """Shard by data (not by file) across workers: works for any number of files."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batchnorm(model, strategy):
    """SyncBatchNorm: trained BatchNorm layers compute their batch statistics over all replicas.

    Under MirroredStrategy each replica sees batch_size / replicas images; a
    BatchNorm layer in training mode would normalise with the statistics of
    its replica's share only. With `synchronized=True` (Keras,
    TensorFlow backend) the mean and variance are all-reduced across the
    replicas, so they are those of the global batch, as on one device. Frozen
    BN (DeepLab v2's ResNet-101, `freeze_bn=True`) uses its moving statistics
    and is left alone, as is every model under a single replica.

    Call on the training model (nested MSC models included) before the first
    training step is traced: the layers read the flag when they are called.

    Args:
      model: a Keras model.
      strategy: the `tf.distribute.Strategy` the model is trained under.

    Returns:
      The names of the layers that were switched to synchronized statistics.
    """
    import keras

    from deeplab_keras.training.optimizer import _all_layers

    if strategy.num_replicas_in_sync <= 1:
        return []
    switched = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable \
                and not layer.synchronized:
            layer.synchronized = True
            switched.append(layer.name)
    return switched
