"""Epochs of the catalogue chosen on held-out *training* images: joint on 90 % of the training set, scored on
the other 10 % (the test set unused), reduced ResNet-18 nf=8, the catalogue's optimizer and augmentation."""
import sys, time, numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from lifelong import OptimConfig, from_arrays, train
from lifelong.data import class_incremental
from lifelong.data.augment import PRESETS
from lifelong.data.files import fashion_mnist
from lifelong.models.resnet import resnet18
from lifelong.strategies import STRATEGIES
torch.set_num_threads(1)
full = fashion_mnist("/usr/share/datasets/fashion-mnist")
order = np.random.default_rng(0).permutation(len(full.y_train))
held, kept = np.sort(order[:6000]), np.sort(order[6000:])
data = from_arrays("fmnist-validation", full.x_train[kept].numpy(), full.y_train[kept].numpy(),
                   full.x_train[held].numpy(), full.y_train[held].numpy())
stream = class_incremental(data, 5)
for epochs in [int(a) for a in sys.argv[1].split(",")]:
    torch.manual_seed(0)
    model = resnet18(stream.input_shape, stream.n_classes, nf=8)
    t = time.time()
    result = train(stream, model, STRATEGIES["joint"](), OptimConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=epochs,
                   schedule="cosine"), seed=0, device="cpu", augment=PRESETS["fashion_mnist"], channels_last=True)
    print(f"joint, {epochs} epochs: held-out accuracy {result.metrics['final_accuracy']:.4f}, {time.time() - t:.0f} s", flush=True)
