"""Optimizers and schedules with PyTorch's semantics, as the original DARTS used them.

Keras's `weight_decay` is decoupled (AdamW-style); DARTS adds an L2 term to
the gradient before the update (`torch.optim.SGD/Adam(weight_decay=...)`).
Keras's SGD keeps a learning-rate-scaled velocity, so its momentum differs
from PyTorch's as soon as the learning rate changes (cosine schedule); and
Keras's Adam applies epsilon to the un-corrected second moment. The classes
here implement PyTorch's update rules exactly and expose the momentum buffer
that the second-order architecture step needs.
"""

from __future__ import annotations

import math
import weakref

import keras
import tensorflow as tf

from darts_tf.errors import ConfigError
from darts_tf.internals import ReplicaReducedGradients, variable_index

_GRAPH_CONSTANTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _handle(variable):
    """The resource handle of a Keras (TensorFlow backend) or plain tf.Variable."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@keras.saving.register_keras_serializable(package="darts_tf")
class SGD(ReplicaReducedGradients, keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, as `torch.optim.SGD`.

    buf = momentum * buf + (g + coupled_weight_decay * w);  w -= lr * buf, or with `nesterov`
    w -= lr * (g + coupled_weight_decay * w + momentum * buf) (PyTorch's `nesterov=True`, as
    NAS-Bench-201's recipes). Used for the DARTS network weights (Liu et al., arXiv:1806.09055, Sec. 3.1.2).
    """

    def __init__(
        self, learning_rate=0.025, momentum=0.9, coupled_weight_decay=0.0, nesterov=False, name="darts_sgd", **kwargs
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if momentum < 0:
            raise ConfigError(f"SGD expected momentum >= 0. Received: momentum={momentum}")
        if nesterov and momentum <= 0:
            raise ConfigError(f"SGD with nesterov expected momentum > 0. Received: momentum={momentum}")
        self.momentum = momentum
        self.coupled_weight_decay = coupled_weight_decay
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def _constants(self, dtype):
        # Created once per traced step, not once per variable: fewer graph ops.
        graph = tf.compat.v1.get_default_graph() if tf.inside_function() else None
        if graph is None:
            return tf.constant(self.momentum, dtype), tf.constant(self.coupled_weight_decay, dtype)
        per_graph = _GRAPH_CONSTANTS.setdefault(graph, {})
        key = (id(self), dtype)
        if key not in per_graph:
            per_graph[key] = (tf.constant(self.momentum, dtype), tf.constant(self.coupled_weight_decay, dtype))
        return per_graph[key]

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        g = tf.cast(gradient, variable.dtype)
        momentum, weight_decay = self._constants(variable.dtype)
        if self.coupled_weight_decay:
            g = g + weight_decay * variable
        buf = self.momentums[variable_index(self, variable)]
        if keras.backend.backend() == "tensorflow":
            # One kernel for buf = momentum * buf + g; w -= lr * buf (PyTorch's rule, in place):
            # a network can have ~1,400 weight tensors (unpacked), so ops per variable count.
            tf.raw_ops.ResourceApplyMomentum(
                var=_handle(variable),
                accum=_handle(buf),
                lr=lr,
                grad=g,
                momentum=momentum,
                use_locking=False,
                use_nesterov=self.nesterov,  # TensorFlow's nesterov form is PyTorch's
            )
            return
        self.assign(buf, self.momentum * buf + g)
        self.assign_sub(variable, lr * (g + self.momentum * buf) if self.nesterov else lr * buf)

    def momentum_buffers(self, variables) -> list:
        """PyTorch's `momentum_buffer` for each variable (zeros before the first step)."""
        if not self.built:
            return [tf.zeros_like(v) for v in variables]
        return [tf.convert_to_tensor(self.momentums[variable_index(self, v)]) for v in variables]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"momentum": self.momentum, "coupled_weight_decay": self.coupled_weight_decay, "nesterov": self.nesterov}
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class Adam(ReplicaReducedGradients, keras.optimizers.Optimizer):
    """Adam with coupled L2 weight decay, as `torch.optim.Adam`.

    Used for the DARTS architecture weights with lr 3e-4, betas (0.5, 0.999),
    weight decay 1e-3 (Liu et al., arXiv:1806.09055, Sec. 3.1.2).
    """

    def __init__(
        self,
        learning_rate=3e-4,
        beta_1=0.5,
        beta_2=0.999,
        epsilon=1e-8,
        coupled_weight_decay=0.0,
        name="darts_adam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.coupled_weight_decay = coupled_weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments = [self.add_variable_from_reference(v, "m") for v in variables]
        self.second_moments = [self.add_variable_from_reference(v, "v") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        g = tf.cast(gradient, dtype)
        if self.coupled_weight_decay:
            g = g + self.coupled_weight_decay * variable
        step = tf.cast(self.iterations + 1, dtype)
        bias_1 = 1.0 - tf.pow(tf.cast(self.beta_1, dtype), step)
        bias_2 = 1.0 - tf.pow(tf.cast(self.beta_2, dtype), step)
        index = variable_index(self, variable)
        m, v = self.first_moments[index], self.second_moments[index]
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * g)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
        denominator = tf.sqrt(v) / tf.sqrt(bias_2) + self.epsilon
        self.assign_sub(variable, (lr / bias_1) * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "coupled_weight_decay": self.coupled_weight_decay,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing stepped once per epoch, as `torch.optim.lr_scheduler.CosineAnnealingLR`.

    lr(epoch) = minimum + (initial - minimum) * (1 + cos(pi * epoch / epochs)) / 2,
    with epoch = floor(step / steps_per_epoch).
    """

    def __init__(self, initial, minimum, epochs, steps_per_epoch):
        if epochs <= 0 or steps_per_epoch <= 0:
            raise ConfigError(
                f"EpochCosineDecay expected positive epochs and steps_per_epoch. "
                f"Received: epochs={epochs}, steps_per_epoch={steps_per_epoch}"
            )
        self.initial = initial
        self.minimum = minimum
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch), tf.float32)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * epoch / float(self.epochs)))
        return self.minimum + (self.initial - self.minimum) * cosine

    def value_at_epoch(self, epoch: int) -> float:
        return self.minimum + (self.initial - self.minimum) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))

    def get_config(self):
        return {
            "initial": self.initial,
            "minimum": self.minimum,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
        }


@keras.saving.register_keras_serializable(package="darts_tf")
class EpochExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(epoch) = initial * gamma ** epoch, stepped once per epoch, as `torch.optim.lr_scheduler.StepLR(1, gamma)`.

    The original's ImageNet schedule (train_imagenet.py: gamma 0.97, decay period 1 epoch).
    """

    def __init__(self, initial, gamma, steps_per_epoch):
        if steps_per_epoch <= 0 or not 0.0 < gamma <= 1.0:
            raise ConfigError(
                "EpochExponentialDecay expected 0 < gamma <= 1 and positive steps_per_epoch. "
                f"Received: gamma={gamma}, steps_per_epoch={steps_per_epoch}"
            )
        self.initial = initial
        self.gamma = gamma
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch), tf.float32)
        return self.initial * tf.pow(tf.constant(self.gamma, tf.float32), epoch)

    def value_at_epoch(self, epoch: int) -> float:
        return self.initial * self.gamma**epoch

    def get_config(self):
        return {"initial": self.initial, "gamma": self.gamma, "steps_per_epoch": self.steps_per_epoch}


def clip_by_global_norm(gradients: list, max_norm: float) -> tuple[list, tf.Tensor]:
    """`torch.nn.utils.clip_grad_norm_`: scale by max_norm / (norm + 1e-6) when that is < 1."""
    norm = tf.linalg.global_norm(gradients)
    scale = tf.minimum(tf.ones([], norm.dtype), max_norm / (norm + 1e-6))  # in the gradients' dtype (float64 too)
    return [g * tf.cast(scale, g.dtype) for g in gradients], norm


def learning_rate_schedule(config, steps_per_epoch: int):
    """The weight learning rate of a run, per epoch: cosine from `config.learning_rate` to
    `config.learning_rate_min`, or exponential (x `config.lr_decay` every epoch) when
    `config.lr_schedule` says so."""
    if getattr(config, "lr_schedule", "cosine") == "exponential":
        return EpochExponentialDecay(config.learning_rate, config.lr_decay, steps_per_epoch)
    return EpochCosineDecay(config.learning_rate, config.learning_rate_min, config.epochs, steps_per_epoch)


class AveragedSGD:
    """`torch.optim.ASGD(lr, t0=0, lambd=0., weight_decay=wd)` as the DARTS/AWD-LSTM training switches to it.

    Each step: w -= eta * (g + wd * w), then the average `ax` takes the new weights
    (copied at steps 1 and 2, then ax += (w - ax) / (step - 1), the mean of the
    weights since step 2, as PyTorch's mu = 1 / max(1, step - t0) schedule gives).
    PyTorch computes the step size of the next step at the end of this one, from the
    learning rate at that moment (`eta` lags the per-batch learning-rate rescaling by
    one step); so does this class. Not a Keras optimizer: it has `variables` (for
    checkpoints), `build` and `apply` like one.
    """

    def __init__(self, learning_rate: float, coupled_weight_decay: float = 0.0):
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="asgd_learning_rate")
        self.coupled_weight_decay = coupled_weight_decay
        self.built = False

    def build(self, variables) -> None:
        if self.built:
            return
        self.step = tf.Variable(0.0, trainable=False, name="asgd_step")
        self.eta = tf.Variable(-1.0, trainable=False, name="asgd_eta")  # < 0: not set yet (the first step's lr)
        self.mu = tf.Variable(1.0, trainable=False, name="asgd_mu")
        self.averages = [tf.Variable(tf.zeros_like(v), trainable=False, name="asgd_ax") for v in variables]
        self.built = True

    @property
    def variables(self) -> list:
        return [self.learning_rate, self.step, self.eta, self.mu, *self.averages]

    def apply(self, gradients, variables) -> None:
        eta = tf.where(self.eta < 0, self.learning_rate, self.eta)
        for variable, gradient, average in zip(variables, gradients, self.averages):
            g = tf.cast(gradient, variable.dtype)
            if self.coupled_weight_decay:
                g = g + self.coupled_weight_decay * variable
            new = variable - tf.cast(eta, variable.dtype) * g
            variable.assign(new)
            mu = tf.cast(self.mu, variable.dtype)
            average.assign(tf.where(self.mu != 1.0, average + (new - average) * mu, new))
        self.step.assign_add(1.0)
        self.eta.assign(self.learning_rate)
        self.mu.assign(1.0 / tf.maximum(1.0, self.step))
