# An SVM whose hyperparameters come from arguments, as in the Azure ML v1 HyperDrive samples.
import argparse
import json
import os

import joblib
import numpy as np
from azureml.core.run import Run
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--kernel', type=str, default='linear', help='Kernel type to be used in the algorithm')
    parser.add_argument('--penalty', type=float, default=1.0, help='Penalty parameter of the error term')
    parser.add_argument('--data-folder', type=str, dest='data_folder', help='data folder')
    parser.add_argument('--run-ref', type=str, dest='run_ref', help='the run this is')
    args = parser.parse_args()

    run = Run.get_context()
    run.log('Kernel type', np.str_(args.kernel))
    run.log('Penalty', np.float64(args.penalty))

    iris = datasets.load_iris()
    x_train, x_test, y_train, y_test = train_test_split(iris.data, iris.target, test_size=0.3, random_state=0)
    svm_model = SVC(kernel=args.kernel, C=args.penalty).fit(x_train, y_train)
    accuracy = svm_model.score(x_test, y_test)
    print('Accuracy of SVM classifier on test set: {:.2f}'.format(accuracy))
    run.log('Accuracy', np.float64(accuracy))
    run.log('converged', np.bool_(True))
    run.log('support_vectors', np.int64(len(svm_model.support_)))

    os.makedirs('outputs', exist_ok=True)
    joblib.dump(svm_model, 'outputs/model.joblib')
    with open('outputs/args.json', 'w') as out:
        json.dump({'data_folder': args.data_folder, 'run_ref': args.run_ref, 'run_id': run.id,
                   'experiment': run.experiment.name, 'parent': run.parent,
                   'env': {k: os.environ.get(k) for k in ('AZUREML_RUN_ID', 'AZUREML_ARM_PROJECT_NAME')},
                   'secret': run.get_secret('api-token') == os.environ['API_TOKEN']}, out)


if __name__ == '__main__':
    main()
