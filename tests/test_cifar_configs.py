"""Every method has a valid CIFAR recipe in every setting (no data needed: configs only)."""
import pytest

from configs import cifar
from gdw_jax import methods, validation


@pytest.mark.parametrize("method", methods.names())
@pytest.mark.parametrize("setting", ["noise=uniform,rate=0.4", "imbalance=0.01",
                                     "dataset=cifar100,noise=flip2,rate=0.2"])
def test_every_method_has_a_valid_cifar_recipe(method, setting):
  c = cifar.get_config(f"method={method},{setting}")
  validation.validate(c)
  assert c.method == method
  # every stage switch of the method falls inside its run
  assert c.loss.drw_epoch < c.num_epochs and c.absgd.start_epoch < c.num_epochs


def test_recipes_set_the_official_method_options():
  lt = cifar.get_config("method=cmwnet,imbalance=0.01")
  assert (lt.recipe, lt.cmwnet.warmup_epochs, lt.cmwnet.meta_source) == (
      "cmwnet_lt", 160, "train_balanced")
  sl = cifar.get_config("method=cmwnet_sl,dataset=cifar100")
  assert (sl.cmwnet_sl.warmup_epochs, sl.cmwnet_sl.meta_every) == (30, 10)
  wrn = cifar.get_config("method=mwnet")
  assert (wrn.model, wrn.mwnet.normalise) == ("wrn28_10", "sum")
  ab = cifar.get_config("method=absgd,imbalance=0.01")
  assert (ab.recipe, ab.absgd.start_epoch, ab.absgd.lam, ab.loss.class_weights) == (
      "ldam_lt", 160, 5.0, "cb")
  ab_noise = cifar.get_config("method=absgd,noise=uniform,rate=0.4")
  assert ab_noise.absgd.lam < 0 and ab_noise.absgd.start_epoch < ab_noise.num_epochs
