# log_image with a matplotlib plot, as v1 scripts did.
import matplotlib.pyplot as plt
import numpy as np
from azureml.core import Run

run = Run.get_context()
alphas = np.arange(0.0, 1.0, 0.1)
mses = [3000 + 100 * (a - 0.4) ** 2 for a in alphas]
for alpha, mse in zip(alphas, mses):
    run.log('alpha', alpha)
    run.log('mse', mse)

plt.plot(alphas, mses, marker='o')
plt.title('MSE by alpha')
plt.xlabel('alpha')
plt.ylabel('mse')
run.log_image('mse_by_alpha', plot=plt)

fig, ax = plt.subplots()
ax.hist(np.random.default_rng(0).normal(size=200), bins=20)
run.log_image('residuals', plot=fig)
fig.savefig('chart.png')
run.log_image('chart_from_file', path='chart.png')
run.complete()
