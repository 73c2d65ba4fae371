"""A conditional GAN that synthesises genre-conditioned MFCC sequences.

Generator: noise z + genre embedding -> Dense -> (frames, 32) -> Conv1D stack -> (frames, n_mfcc).
Discriminator: MFCC sequence + genre embedding broadcast over time -> strided Conv1D stack ->
one logit. Trained adversarially with binary cross-entropy and Adam (lr 2e-4, beta1 0.5,
beta2 0.999) as in the studies. The GAN works on standardised MFCCs (per-coefficient
mean/std of the training split, stored with the run); callers undo the scaling.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def build_generator(frames: int, n_mfcc: int, num_classes: int, latent_dim: int = 100,
                    embed_dim: int = 32, channels: int = 64) -> keras.Model:
    """The conditional generator: noise and a genre id in, one (frames, n_mfcc) MFCC sequence out."""
    z = keras.Input((latent_dim,), name="noise")
    y = keras.Input((), dtype="int32", name="genre")
    e = layers.Flatten(name="genre_flat")(layers.Embedding(num_classes, embed_dim, name="genre_embedding")(
        layers.Reshape((1,), name="genre_2d")(y)))
    h = layers.Concatenate(name="z_and_genre")([z, e])
    h = layers.Dense(frames * 32, name="project")(h)
    h = layers.LeakyReLU(0.2, name="project_act")(h)
    h = layers.Reshape((frames, 32), name="to_sequence")(h)
    for i in range(2):
        h = layers.Conv1D(channels, 5, padding="same", name=f"conv_{i + 1}")(h)
        h = layers.BatchNormalization(name=f"bn_{i + 1}")(h)
        h = layers.LeakyReLU(0.2, name=f"act_{i + 1}")(h)
    out = layers.Conv1D(n_mfcc, 5, padding="same", name="mfcc", dtype="float32")(h)
    return keras.Model([z, y], out, name="generator")


def build_discriminator(frames: int, n_mfcc: int, num_classes: int, embed_dim: int = 16,
                        channels: int = 64, dropout: float = 0.3) -> keras.Model:
    """The conditional discriminator: an MFCC sequence and a genre id in, a real/fake logit out."""
    x = keras.Input((frames, n_mfcc), name="mfcc")
    y = keras.Input((), dtype="int32", name="genre")
    e = layers.Embedding(num_classes, embed_dim, name="genre_embedding")(layers.Reshape((1,), name="genre_2d")(y))
    e = layers.UpSampling1D(frames, name="genre_over_time")(e)
    h = layers.Concatenate(axis=-1, name="mfcc_and_genre")([x, e])
    for i, c in enumerate((channels, channels * 2)):
        h = layers.Conv1D(c, 5, strides=2, padding="same", name=f"conv_{i + 1}")(h)
        h = layers.LeakyReLU(0.2, name=f"act_{i + 1}")(h)
        h = layers.Dropout(dropout, name=f"dropout_{i + 1}")(h)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    out = layers.Dense(1, name="logit", dtype="float32")(h)
    return keras.Model([x, y], out, name="discriminator")


class ConditionalGAN(keras.Model):
    """Trains with ``fit((mfcc, genre_ids))``; logs ``d_loss`` and ``g_loss`` per epoch."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int = 100,
                 seed: int = 0, **kw):
        super().__init__(**kw)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.seed_gen = keras.random.SeedGenerator(seed)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, g_optimizer=None, d_optimizer=None, **kw):
        super().compile(**kw)
        self.g_optimizer = g_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.999)
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.999)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def train_step(self, data):
        x, y = data
        batch = tf.shape(x)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_gen)
        with tf.GradientTape() as tape:
            fake = self.generator([z, y], training=True)
            real_logit = self.discriminator([x, y], training=True)
            fake_logit = self.discriminator([fake, y], training=True)
            d_loss = (self.bce(tf.ones_like(real_logit), real_logit)
                      + self.bce(tf.zeros_like(fake_logit), fake_logit))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights, strict=True))
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_gen)
        with tf.GradientTape() as tape:
            fake_logit = self.discriminator([self.generator([z, y], training=True), y], training=True)
            g_loss = self.bce(tf.ones_like(fake_logit), fake_logit)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights, strict=True))
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}
