# Ridge regression over a list of alphas, as in the Azure ML v1 "train on local" samples.
import os

import joblib
import mylib
from azureml.core.run import Run
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

os.makedirs('./outputs', exist_ok=True)

X, y = load_diabetes(return_X_y=True)

run = Run.get_context()

X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
data = {"train": {"X": X_train, "y": y_train},
        "test": {"X": X_test, "y": y_test}}

alphas = mylib.get_alphas()
run.log_list('alphas', alphas)
run.tag('algorithm', 'ridge')
run.set_tags({'dataset': 'diabetes', 'owner': 'data-science'})
run.add_properties({'framework': 'scikit-learn'})

best = None
for alpha in alphas:
    reg = Ridge(alpha=alpha)
    reg.fit(data["train"]["X"], data["train"]["y"])
    preds = reg.predict(data["test"]["X"])
    mse = mean_squared_error(preds, data["test"]["y"])
    run.log('alpha', alpha)
    run.log('mse', mse)
    run.log_row('results', alpha=float(alpha), mse=float(mse))
    model_file_name = 'ridge_{0:.2f}.pkl'.format(alpha)
    joblib.dump(value=reg, filename=os.path.join('./outputs/', model_file_name))
    if best is None or mse < best[1]:
        best = (alpha, mse, model_file_name)
    print('alpha is {0:.2f}, and mse is {1:0.2f}'.format(alpha, mse))

run.log_table('coefficients', {'feature': list(range(3)), 'weight': [1.5, -0.5, 2.0]})
run.log('best_alpha', best[0])

# registered now (the file is uploaded first) and at the end (from ./outputs)
run.upload_file('best_model/model.pkl', os.path.join('./outputs/', best[2]))
run.register_model(model_name='diabetes-ridge-uploaded', model_path='best_model/model.pkl',
                   tags={'alpha': str(best[0])})
run.register_model(model_name='diabetes-ridge', model_path='outputs/' + best[2],
                   tags={'alpha': str(best[0])}, description='best ridge model')
run.complete()
