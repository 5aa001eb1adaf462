"""A small training run to look at: logistic regression on a synthetic data set, in NumPy.

    python examples/demo_train.py [--name demo] [--epochs 30]

Logs what a real run logs: loss and accuracy per step, learning rate, the weight matrix
(a tensor, shown as a heat-map), gradient norms and a note per epoch; and media: a picture
of each class's weights every 5 epochs (an image with a step slider and a GIF on the web
box), the weights as a FITS image, and the data as a 3-D point cloud coloured by the
predicted class.
"""

import argparse

import numpy as np

from labstats import Stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="demo")
    parser.add_argument("--savedir", default="runs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    n, features, classes = 2048, 16, 4
    centers = rng.normal(0, 0.9, (classes, features))
    labels = rng.integers(0, classes, n)
    x = centers[labels] + rng.normal(0, 1.5, (n, features))
    weights = np.zeros((features, classes))
    steps = n // args.batch_size

    with Stats(f"{args.savedir}/{args.name}", config=vars(args), seed=args.seed, tags=["demo"]) as stats:
        stats.watch(weights, "weights")
        for epoch in range(args.epochs):
            lr = args.lr * 0.5 * (1 + np.cos(np.pi * epoch / args.epochs))
            order = rng.permutation(n)
            for step in range(steps):
                batch = order[step * args.batch_size : (step + 1) * args.batch_size]
                logits = x[batch] @ weights
                logits -= logits.max(axis=1, keepdims=True)
                probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                loss = -np.log(probs[np.arange(len(batch)), labels[batch]] + 1e-12).mean()
                accuracy = float((probs.argmax(axis=1) == labels[batch]).mean())
                grad = probs.copy()
                grad[np.arange(len(batch)), labels[batch]] -= 1
                grad_w = x[batch].T @ grad / len(batch)
                weights -= lr * grad_w  # in place: the watched array follows
                if step % 8 == 0:  # every 8th step: the watched weights, at the original idx
                    stats.update(epoch, n, args.batch_size, step)
                stats.log(
                    step=epoch * n + step * args.batch_size,
                    loss=float(loss),
                    acc=accuracy,
                    grad_norm=float(np.linalg.norm(grad_w)),
                    lr=float(lr),
                )
            overall = float(((x @ weights).argmax(axis=1) == labels).mean())
            stats.log(step=(epoch + 1) * n - 1, epoch_note=f"epoch {epoch}: train accuracy {overall:.3f}")
            if epoch % 5 == 0 or epoch == args.epochs - 1:
                stats.image("class_weights", weight_picture(weights), caption=f"epoch {epoch}")
        stats.fits("weights_fits", weights.T, header={"EPOCHS": args.epochs, "LR": args.lr})
        # The data seen along its 3 main directions, coloured by the predicted class.
        centred = x - x.mean(axis=0)
        axes = np.linalg.svd(centred, full_matrices=False)[2][:3]
        palette = np.array([[230, 60, 50], [50, 160, 70], [40, 90, 220], [240, 170, 0]], np.uint8)
        stats.points("data_3d", centred @ axes.T, colors=palette[(x @ weights).argmax(axis=1) % len(palette)])
    print(f"logged run {stats.name!r} ({stats.run_id})")


def weight_picture(weights: np.ndarray) -> np.ndarray:
    """The weights of each class as a 4×4 tile, side by side, red for positive and blue
    for negative (an RGB image, scaled up 16 times)."""
    features, classes = weights.shape
    side = int(np.sqrt(features))
    tiles = weights.T.reshape(classes, side, side)
    scaled = tiles / (np.abs(tiles).max() or 1.0)
    row = np.concatenate(list(scaled), axis=1)
    picture = np.zeros((*row.shape, 3))
    picture[..., 0] = np.clip(row, 0, 1)
    picture[..., 2] = np.clip(-row, 0, 1)
    return np.kron(picture, np.ones((16, 16, 1)))


if __name__ == "__main__":
    main()
