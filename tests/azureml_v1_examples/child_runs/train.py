# Child runs, as v1 scripts made them: one per fold, one per model (with a nested run), one that fails.
from azureml.core import Run

run = Run.get_context()

folds = run.create_children(count=3)
for i, fold in enumerate(folds):
    fold.log('fold', i)
    fold.log_list('loss', [1.0 / (i + 1), 0.5 / (i + 1)])
    fold.tag('kind', 'fold')
    fold.log_row('epochs', epoch=1, loss=0.5 / (i + 1))
    fold.upload_file('notes/fold.txt', __file__)
    fold.complete()

for child in run.create_children(tag_key='model', tag_values=['ridge', 'lasso']):
    child.log('score', 0.9)
    child.log('status_text', 'fitted')
    search = child.child_run(name='search-' + child.id)
    search.log('trials', 5)
    search.complete()
    assert search.parent is child and child.parent is run
    child.complete()

diverged = run.child_run(name='diverged')
diverged.log('loss', 1e9)
diverged.fail(error_details='loss diverged')

left_open = run.child_run(name='left-open')
left_open.log('started', 1)

run.log('children', 7)
print('run', run.id, 'children', [f.id for f in folds])
run.complete()
