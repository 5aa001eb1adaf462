"""A small training run to look at: logistic regression on a synthetic data set, in NumPy.

    python examples/demo_train.py [--name demo] [--epochs 30]

Logs what a real run logs: loss and accuracy per step, learning rate, the weight matrix
(a tensor, shown as a heat-map), gradient norms and a note per epoch.
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
    print(f"logged run {stats.name!r} ({stats.run_id})")


if __name__ == "__main__":
    main()
