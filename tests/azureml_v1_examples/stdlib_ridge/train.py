# Ridge regression over a list of alphas in pure Python (for images without numpy).
import argparse
import json
import os

import ridgelib
from azureml.core import Run

parser = argparse.ArgumentParser()
parser.add_argument('--output-name', type=str)
parser.add_argument('--run-ref', type=str)
args = parser.parse_args()

run = Run.get_context()
xs = [float(i) for i in range(10)]
ys = [2.0 * x + (0.5 if i % 2 else -0.5) for i, x in enumerate(xs)]

alphas = ridgelib.get_alphas()
run.log_list('alphas', alphas)
run.log('solver', 'closed-form')
for alpha in alphas:
    weight = ridgelib.fit(xs, ys, alpha)
    run.log('alpha', alpha)
    run.log('mse', ridgelib.mse(xs, ys, weight))
    child = run.child_run(name='alpha-{}'.format(alpha))
    child.log('weight', weight)
    child.complete()

# a tiny valid PNG (1x1 pixel), logged from a file as images/<name>.png
png = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                    '1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082')
with open('pixel.png', 'wb') as out:
    out.write(png)
run.log_image('pixel', path='pixel.png')

os.makedirs('outputs', exist_ok=True)
with open(os.path.join('outputs', args.output_name), 'w') as out:
    json.dump({'run_ref': args.run_ref, 'run_id': run.id, 'experiment': run.experiment.name}, out)
run.complete()
