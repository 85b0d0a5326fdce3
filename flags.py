"""Command-line flags shared by train.py, evaluate.py and predict.py (declarations only).

Training flags left unset take the dataset's recipe (training/config.py) or, when resuming, the
run's saved settings; the defaults shown here are those of a new digits run.
"""
from absl import flags

# -- Data ----------------------------------------------------------------------------------------
flags.DEFINE_enum("dataset", "digits",
                  ["digits", "folder", "mini_imagenet", "tiny_imagenet", "cifar10", "imagenet"],
                  "Dataset layout to read (input_pipeline/). digits needs no download.")
flags.DEFINE_string("data_dir", None, "Where the dataset is. digits: where to write its JPEGs "
                    "(default ~/.cache/googlenet-tf/digits). folder: class folders, or train/ "
                    "beside val/ and/or test/ holding class folders.")
flags.DEFINE_float("test_fraction", 0.3, "Held-out fraction for datasets without a test split "
                   "(stratified per class, saved in the run directory).")
flags.DEFINE_enum("cache", "auto", ["auto", "memory", "disk", "disk_jpeg", "none"],
                  "Where decoded images are cached: memory; disk (raw pixels in a file); "
                  "disk_jpeg (re-encoded JPEGs in a file: a fraction of the bytes, a decode per "
                  "read); none. auto = memory if they fit in half the free RAM, else disk if raw "
                  "pixels take no more than the data itself, else disk_jpeg.")
flags.DEFINE_string("cache_dir", None, "Directory for the disk cache (default <run_dir>/cache).")

# -- Model ---------------------------------------------------------------------------------------
flags.DEFINE_enum("model", None,
                  ["googlenet", "googlenet_bn", "googlenet_64", "minigooglenet", "inception_v3"],
                  "Network (inception/). Default: the dataset's (digits: minigooglenet).")
flags.DEFINE_integer("image_size", None, "Input size in pixels. Default: the dataset's or model's.")
flags.DEFINE_float("width_multiplier", None, "Scales every layer's channels (e.g. 0.25).")
flags.DEFINE_float("dropout_rate", None, "Dropout before the classifier (default: the model's).")

# -- Towers --------------------------------------------------------------------------------------
flags.DEFINE_integer("num_gpus", None, "Number of towers, one per GPU. Default: every visible "
                     "GPU, or one CPU tower without GPUs.")
flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multi_worker"],
                  "auto: several machines (MultiWorkerMirroredStrategy) when TF_CONFIG describes "
                  "a cluster, else one machine's towers (MirroredStrategy).")
flags.DEFINE_bool("towers_on_cpu", False, "Run the --num_gpus towers on logical CPU devices.")
flags.DEFINE_integer("batch_size", None, "GLOBAL batch size, split evenly across the towers.")

# -- Optimisation --------------------------------------------------------------------------------
flags.DEFINE_integer("epochs", None, "Epochs to train in all (raise it to train a run longer).")
flags.DEFINE_float("lr", None, "Learning rate for the global batch. Given on resume, it takes "
                   "over from the current step.")
flags.DEFINE_enum("lr_schedule", None, ["exponential_step", "polynomial", "cosine", "constant"],
                  "Learning-rate schedule, in epochs.")
flags.DEFINE_list("lr_decay_epochs", None, "exponential_step: epochs at which the rate is "
                  "multiplied by --lr_gamma, e.g. 70,140,210,280.")
flags.DEFINE_float("lr_gamma", None, "exponential_step: the factor at each decay epoch.")
flags.DEFINE_float("warmup_epochs", None, "Linear learning-rate warm-up, in epochs.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_bool("nesterov", None, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", None, "L2 weight decay on conv and dense kernels.")
flags.DEFINE_float("label_smoothing", None, "Label smoothing of the cross-entropy.")
flags.DEFINE_float("aux_weight", 0.3, "Weight of each auxiliary classifier's loss.")
flags.DEFINE_bool("mixed_precision", None, "bfloat16 compute on CPU, float16 with loss scaling on "
                  "GPU. Default: on for CPUs with AMX bfloat16 units (1.9x faster GoogLeNet "
                  "training, benchmarks/tuning.py), off elsewhere.")
flags.DEFINE_enum("mixed_precision_dtype", "auto", ["auto", "bfloat16", "float16"],
                  "The 16-bit type of --mixed_precision: auto = float16 with loss scaling on "
                  "GPUs, bfloat16 on CPUs. Naming one turns mixed precision on unless "
                  "--nomixed_precision.")
flags.DEFINE_enum("augment_on", "auto", ["auto", "host", "device"],
                  "Where training batches are cropped, flipped and colour-jittered: host (the "
                  "input pipeline hands the towers float32 crops) or device (uint8 cached "
                  "images and the sampled parameters go to each tower, which augments them: a "
                  "third of the bytes and no host cores). Same result either way. auto = device "
                  "on GPUs, host on CPU towers.")
flags.DEFINE_bool("jit_compile", False, "Compile each tower's forward and backward pass with XLA.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and seeds (slower).")
flags.DEFINE_integer("seed", 0, "Seed of the split, the shuffling and the augmentation.")

# -- Run directory, logging, checkpoints ---------------------------------------------------------
flags.DEFINE_string("run_dir", None, "Run directory (default runs/<dataset>-<model>). Re-running "
                    "a command resumes the run in it.")
flags.DEFINE_integer("log_every", 20, "Steps between TensorBoard / progress-bar updates.")
flags.DEFINE_integer("checkpoint_every", 0, "Steps between checkpoints (besides every epoch).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep; 0 keeps every "
                     "one (to --restart_from any epoch later).")
flags.DEFINE_string("restart_from", None, "Continue the run from an older checkpoint of its own: "
                    "an epoch number (the checkpoint saved as it ended) or a name such as "
                    "ckpt-1050; with --lr to change the rate there. Later checkpoints, "
                    "history.csv and logs are moved to <run_dir>/set_aside/, not deleted.")
flags.DEFINE_integer("eval_every_epochs", 1, "Epochs between held-out evaluations.")

# -- Evaluation, prediction, export (evaluate.py, predict.py) ------------------------------------
flags.DEFINE_string("checkpoint_dir", None, "The run directory to evaluate or predict with.")
flags.DEFINE_string("checkpoint", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_enum("crops", "1", ["1", "10", "144"], "Evaluation crops per image: centre, 10 "
                  "(corners + centre, mirrored) or the paper's 144; softmax averaged over them.")
flags.DEFINE_string("eval_split", None, "Which held-out split to score: for a pre-split folder "
                    "with both val/ and test/, val (the default, scored during training) or test.")
flags.DEFINE_bool("watch", False, "Evaluate each new checkpoint as training writes it.")
flags.DEFINE_float("watch_timeout", 3600, "--watch: seconds to wait for a new checkpoint.")
flags.DEFINE_string("export_dir", None, "Write a SavedModel for serving (JPEG/PNG bytes in, "
                    "class probabilities and names out) to this directory.")
flags.DEFINE_integer("top_k", 5, "predict.py: classes to print per image.")
