"""The metadata keys and run tags that stages write and sensors, schedules and tools read.

One module, so a stage and the sensor that reads it can never disagree on a spelling.
"""

# -- asset metadata ------------------------------------------------------------------------
STATUS = "status"                          # validated_features: accepted | rejected
LABELLED = "labelled"                      # validated_features: the batch carries labels
LABELLED_ROWS = "labelled_rows"            # model_performance: predictions joined to delayed labels
TRAINABLE_LATE_LABELS = "late_labels_for_training"  # ...of them, rows of partitions that arrived unlabelled
DATA_VERSION = "data_version"              # content hash of what the asset wrote
MODEL_VERSION = "model_version"            # the MLflow version a stage worked on
MLFLOW_RUN_ID = "mlflow_run_id"
MLFLOW_EXPERIMENT_ID = "mlflow_experiment_id"
CHAMPION_VERSION = "champion_version"      # the champion a result was computed against
TRAINING_DATA_VERSION = "training_data_version"
TRAINING_PARTITIONS = "training_partitions"
GATE_PASSED = "gate_passed"
APPROVAL = "approval"
DRIFT_SHARE = "drift_share"
DATASET_DRIFT = "dataset_drift"
KEY_FEATURES_DRIFTED = "key_features_drifted"
INPUT_DATA_VERSION = "input_data_version"  # identifies "this condition on this data"
RETRAIN_SIGNAL = "retrain_signal"

ACCEPTED = "accepted"
REJECTED = "rejected"

# -- run tags --------------------------------------------------------------------------------
TRIGGER_TAG = "mlops/trigger"
SOURCE_FILE_TAG = "mlops/source_file"
DATA_VERSION_TAG = "mlops/data_version"
PARTITION_TAG = "mlops/partition"
CHAMPION_TAG = "mlops/champion"
SIGNALS_TAG = "mlops/signals"
KIND_TAG = "mlops/kind"

# Dagster's own tags on a sensor-launched run (stable public values, no public constants).
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
PARTITION_KEY_TAG = "dagster/partition"

# -- the retrain loop --------------------------------------------------------------------
TRAINING_SET = "training_set"              # identity of the data + recipe a model was trained on
DELAYED_LABEL_ROWS = "delayed_label_rows"  # training rows labelled by ground-truth files
LATE_LABELLED_PARTITIONS = "late_labelled_partitions"  # {partition: rows} those rows came from
ROLLED_BACK_FROM = "rolled_back_from"      # registered_model after a rollback: the version left
TRAINING_SET_TAG = "mlops/training_set"
DECISION_TAG = "mlops/decision"

# -- releases (shadow and canary) ------------------------------------------------------------
RELEASE = "release"                        # registered_model / model_performance: the release as JSON
RELEASE_VERSION = "release_version"        # the candidate under release
RELEASE_STATE = "release_state"            # active | promoted | ended
RELEASE_MODE = "release_mode"              # shadow | canary
RELEASE_ACTION = "release_action"          # model_performance: the rule's promote | end | wait
RELEASE_REASON = "release_reason"
RELEASE_ARMS = "release_arms"              # model_performance: the per-arm comparison as JSON
RELEASE_VERSION_TAG = "mlops/release_version"
RELEASE_ACTION_TAG = "mlops/release_action"
