import filecmp
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

import nnunetv2_micd
from nnunetv2_micd.dataset_conversion.ssl_split import make_ssl_dataset, parse_count, plan_ssl_split, resolve_target_name

SOURCE = 'Dataset004_Hippocampus'
NUM_CASES = 12
CASE_IDS = [f'hippo_{i:03d}' for i in range(NUM_CASES)]
FILE_ENDING = '.nii.gz'


def _write_image(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.5, 2.0))
    sitk.WriteImage(image, str(path))


def _make_source_dataset(raw: Path, num_channels: int) -> Path:
    folder = raw / SOURCE
    (folder / 'imagesTr').mkdir(parents=True)
    (folder / 'labelsTr').mkdir()
    rng = np.random.default_rng(0)
    for case in CASE_IDS:
        for channel in range(num_channels):
            _write_image(rng.random((4, 5, 6)).astype(np.float32),
                         folder / 'imagesTr' / f'{case}_{channel:04d}{FILE_ENDING}')
        _write_image(rng.integers(0, 3, (4, 5, 6)).astype(np.uint8), folder / 'labelsTr' / f'{case}{FILE_ENDING}')
    generate_dataset_json(str(folder), {i: f'MRI{i}' for i in range(num_channels)},
                          {'background': 0, 'anterior': 1, 'posterior': 2}, NUM_CASES, FILE_ENDING,
                          dataset_name=SOURCE)
    return folder


@pytest.fixture
def raw(tmp_path, monkeypatch) -> Path:
    raw = tmp_path / 'nnUNet_raw'
    raw.mkdir()
    monkeypatch.setenv('nnUNet_raw', str(raw))
    monkeypatch.delenv('nnUNet_preprocessed', raising=False)
    monkeypatch.delenv('nnUNet_results', raising=False)
    return raw


@pytest.fixture
def source(raw) -> Path:
    return _make_source_dataset(raw, num_channels=1)


@pytest.mark.parametrize('text, total, expected', [
    ('10', 12, 10), (' 3 ', 12, 3), ('12', 12, 12), ('50%', 12, 6), ('5%', 12, 1), ('1%', 12, 1),
    ('25%', 10, 3), ('2.5%', 200, 5), ('100%', 7, 7),
])
def test_parse_count(text, total, expected):
    assert parse_count(text, total) == expected


@pytest.mark.parametrize('text', ['0', '-1', '13', '0%', '-5%', '101%', 'abc', '3.5', '%', '', 'nan%', '5%%'])
def test_parse_count_rejects(text):
    with pytest.raises(ValueError):
        parse_count(text, 12)


def test_resolve_target_name(raw):
    assert resolve_target_name('601', SOURCE) == 'Dataset601_Hippocampus'
    assert resolve_target_name('7', SOURCE) == 'Dataset007_Hippocampus'
    assert resolve_target_name('Dataset602_HippoSSL', SOURCE) == 'Dataset602_HippoSSL'
    for bad in ['Dataset60_X', 'Dataset601_', 'hippo', '6011', SOURCE]:
        with pytest.raises(ValueError):
            resolve_target_name(bad, SOURCE)


def test_resolve_target_name_refuses_ambiguous_id(raw):
    (raw / 'Dataset601_Other').mkdir()
    with pytest.raises(ValueError, match='Dataset601_Other'):
        resolve_target_name('601', SOURCE)
    (raw / 'Dataset602_Hippocampus').mkdir()
    assert resolve_target_name('602', SOURCE) == 'Dataset602_Hippocampus'


@pytest.mark.parametrize('folder', ['nnUNet_preprocessed', 'nnUNet_results'])
def test_an_id_taken_in_another_nnunet_folder_is_refused(raw, tmp_path, monkeypatch, folder):
    other = tmp_path / folder
    (other / 'Dataset603_Other').mkdir(parents=True)
    monkeypatch.setenv(folder, str(other))
    with pytest.raises(ValueError, match='Dataset603_Other already uses id 603'):
        resolve_target_name('603', SOURCE)


def test_plan_is_a_deterministic_partition():
    split = plan_ssl_split(CASE_IDS, 4, 3, seed=1)
    assert split == plan_ssl_split(list(reversed(CASE_IDS)), 4, 3, seed=1)
    assert split != plan_ssl_split(CASE_IDS, 4, 3, seed=2)
    assert [len(split[k]) for k in ('labeled', 'unlabeled', 'test')] == [4, 5, 3]
    assert sorted(split['labeled'] + split['unlabeled'] + split['test']) == CASE_IDS
    assert all(split[k] == sorted(split[k]) for k in split)


def test_plan_is_nested():
    for seed in range(5):
        small, large = plan_ssl_split(CASE_IDS, 3, 2, seed), plan_ssl_split(CASE_IDS, 6, 2, seed)
        assert set(small['labeled']) < set(large['labeled'])
        assert small['test'] == large['test']
        assert set(large['unlabeled']) < set(small['unlabeled'])


@pytest.mark.parametrize('num_labeled, num_test', [(0, 2), (11, 2), (3, -1)])
def test_plan_rejects_impossible_sizes(num_labeled, num_test):
    with pytest.raises(ValueError):
        plan_ssl_split(CASE_IDS, num_labeled, num_test, seed=0)


def test_make_ssl_dataset_multichannel_without_label_leaks(raw):
    source = _make_source_dataset(raw, num_channels=2)
    target = Path(make_ssl_dataset('4', '601', labeled='3', test='25%', seed=3))

    assert target == raw / 'Dataset601_Hippocampus'
    manifest = load_json(str(target / 'ssl_manifest.json'))
    split = manifest['splits']
    assert split == plan_ssl_split(CASE_IDS, 3, 3, seed=3)
    assert manifest['source_dataset'] == SOURCE
    assert manifest['seed'] == 3
    assert (manifest['labeled_spec'], manifest['test_spec']) == ('3', '25%')
    assert manifest['nnunetv2_micd_version'] == nnunetv2_micd.__version__

    images_per_folder = {'imagesTr': split['labeled'], 'imagesUnlabeled': split['unlabeled'], 'imagesTs': split['test']}
    for subfolder, cases in images_per_folder.items():
        files = sorted(os.listdir(target / subfolder))
        assert files == [f'{c}_{ch:04d}{FILE_ENDING}' for c in cases for ch in range(2)]
        assert all(filecmp.cmp(target / subfolder / f, source / 'imagesTr' / f, shallow=False) for f in files)
    expected_labels = [f'labelsTr/{c}{FILE_ENDING}' for c in split['labeled']] + \
                      [f'labelsTs/{c}{FILE_ENDING}' for c in split['test']]
    expected_images = [f'{folder}/{f}' for folder in images_per_folder for f in os.listdir(target / folder)]
    all_files = [p.relative_to(target).as_posix() for p in target.rglob('*') if p.is_file()]
    assert sorted(all_files) == sorted(expected_labels + expected_images + ['dataset.json', 'ssl_manifest.json'])
    assert all(filecmp.cmp(target / f, source / 'labelsTr' / Path(f).name, shallow=False) for f in expected_labels)

    dataset_json = load_json(str(target / 'dataset.json'))
    assert (dataset_json['numTraining'], dataset_json['numUnlabeled'], dataset_json['numTest']) == (3, 6, 3)
    assert dataset_json['channel_names'] == {'0': 'MRI0', '1': 'MRI1'}
    assert dataset_json['labels'] == load_json(str(source / 'dataset.json'))['labels']
    verify_dataset_integrity(str(target), num_processes=1)


def test_labeled_percentage_refers_to_cases_left_after_test_split(source):
    target = make_ssl_dataset(SOURCE, 'Dataset610_Half', labeled='50%', test='4')
    split = load_json(os.path.join(target, 'ssl_manifest.json'))['splits']
    assert [len(split[k]) for k in ('labeled', 'unlabeled', 'test')] == [4, 4, 4]
    assert not (Path(make_ssl_dataset(4, '611', labeled='12')) / 'imagesTs').exists()


def test_nested_datasets_share_the_test_split(source):
    small = load_json(os.path.join(make_ssl_dataset(4, '603', '3', test='2', seed=7), 'ssl_manifest.json'))['splits']
    large = load_json(os.path.join(make_ssl_dataset(4, '606', '6', test='2', seed=7), 'ssl_manifest.json'))['splits']
    assert set(small['labeled']) < set(large['labeled'])
    assert small['test'] == large['test']


def test_refuses_to_overwrite_unless_asked(source, raw, tmp_path, monkeypatch):
    target = Path(make_ssl_dataset(4, '601', labeled='3', seed=0))
    (target / 'stale.txt').write_text('from an earlier run')
    with pytest.raises(FileExistsError, match='--overwrite'):
        make_ssl_dataset(4, '601', labeled='5', seed=0)
    assert load_json(str(target / 'dataset.json'))['numTraining'] == 3

    folds = tmp_path / 'nnUNet_preprocessed' / 'Dataset601_Hippocampus' / 'splits_final.json'
    folds.parent.mkdir(parents=True)
    folds.write_text('[{"train": ["the old labeled cases"], "val": []}]')  # nnU-Net would reuse it
    monkeypatch.setenv('nnUNet_preprocessed', str(folds.parent.parent))
    make_ssl_dataset(4, '601', labeled='5', seed=0, overwrite=True)
    assert load_json(str(target / 'dataset.json'))['numTraining'] == 5
    assert not folds.exists()
    assert not (target / 'stale.txt').exists()
    assert sorted(os.listdir(raw)) == [SOURCE, 'Dataset601_Hippocampus']


def test_failed_run_leaves_nothing_behind(source, raw):
    with pytest.raises(ValueError, match='after the test split'):
        make_ssl_dataset(4, '601', labeled='10', test='3')
    assert os.listdir(raw) == [SOURCE]


def test_requires_fully_labeled_source(source, raw):
    (source / 'labelsTr' / f'{CASE_IDS[5]}{FILE_ENDING}').unlink()
    with pytest.raises(FileNotFoundError, match=CASE_IDS[5]):
        make_ssl_dataset(4, '601', labeled='3')
    for label in (source / 'labelsTr').iterdir():
        label.unlink()
    (source / 'labelsTr').rmdir()
    with pytest.raises(FileNotFoundError, match='labelsTr'):
        make_ssl_dataset(4, '601', labeled='3')
    assert os.listdir(raw) == [SOURCE]



def test_a_class_in_no_test_case_is_refused(source, raw):
    rng = np.random.default_rng(1)
    for case in CASE_IDS[1:]:  # posterior (2) only in the first case
        _write_image(rng.integers(0, 2, (4, 5, 6)).astype(np.uint8), source / 'labelsTr' / f'{case}{FILE_ENDING}')
    first_case_tested = {seed: CASE_IDS[0] in plan_ssl_split(CASE_IDS, 3, 2, seed)['test'] for seed in range(50)}
    seed_without = next(seed for seed, tested in first_case_tested.items() if not tested)
    seed_with = next(seed for seed, tested in first_case_tested.items() if tested)
    with pytest.raises(ValueError, match=r'None of the 2 test cases holds posterior \(2\).*--seed'):
        make_ssl_dataset(4, '601', labeled='3', test='2', seed=seed_without)
    assert os.listdir(raw) == [SOURCE]
    make_ssl_dataset(4, '601', labeled='3', test='2', seed=seed_with)
    make_ssl_dataset(4, '602', labeled='3', seed=seed_without)  # without a test split there is nothing to check


def test_explicitly_listed_cases_are_the_labeled_ones(source, raw, tmp_path):
    listed = tmp_path / 'labeled.txt'
    listed.write_text(f'# the cases our annotator finished\n{CASE_IDS[7]}\n\n{CASE_IDS[2]}  # second batch\n')
    target = Path(make_ssl_dataset(4, '601', labeled_cases=str(listed)))
    manifest = load_json(str(target / 'ssl_manifest.json'))
    assert (manifest['labeled_spec'], manifest['labeled_cases_given']) == (None, str(listed))
    split = manifest['splits']
    assert split == {'labeled': [CASE_IDS[2], CASE_IDS[7]],
                     'unlabeled': [c for c in CASE_IDS if c not in (CASE_IDS[2], CASE_IDS[7])], 'test': []}
    assert sorted(os.listdir(target / 'labelsTr')) == [f'{CASE_IDS[2]}{FILE_ENDING}', f'{CASE_IDS[7]}{FILE_ENDING}']
    assert not (target / 'labelsUnlabeled').exists() and not (target / 'imagesTs').exists()
    comma_list = Path(make_ssl_dataset(4, '602', labeled_cases=f'{CASE_IDS[2]},{CASE_IDS[7]}'))
    assert load_json(str(comma_list / 'ssl_manifest.json'))['splits'] == split


@pytest.mark.parametrize('cases, message', [
    ('hippo_003,hippo_099', r"labeled cases \['hippo_099'\] are not training cases"),
    ('hippo_003,hippo_003', r"labeled cases \['hippo_003'\] are listed twice"),
])
def test_unknown_or_repeated_listed_cases_are_refused(source, raw, cases, message):
    with pytest.raises(ValueError, match=message):
        make_ssl_dataset(4, '601', labeled_cases=cases)
    assert os.listdir(raw) == [SOURCE]


def _hold_out(source: Path, cases) -> None:
    """Moves ``cases`` into the source's own held-out split (imagesTs/labelsTs), as micd convert-acdc writes it."""
    (source / 'imagesTs').mkdir()
    (source / 'labelsTs').mkdir()
    for case in cases:
        (source / 'imagesTr' / f'{case}_0000{FILE_ENDING}').rename(source / 'imagesTs' / f'{case}_0000{FILE_ENDING}')
        (source / 'labelsTr' / f'{case}{FILE_ENDING}').rename(source / 'labelsTs' / f'{case}{FILE_ENDING}')


def test_a_sources_own_held_out_split_is_kept_as_the_test_split(source, raw):
    _hold_out(source, CASE_IDS[-3:])
    target = Path(make_ssl_dataset(4, '601', labeled_cases=CASE_IDS[0]))
    split = load_json(str(target / 'ssl_manifest.json'))['splits']
    assert split['test'] == CASE_IDS[-3:] and split['labeled'] == CASE_IDS[:1]
    assert split['unlabeled'] == CASE_IDS[1:-3]  # no held-out case among the training cases
    assert sorted(os.listdir(target / 'labelsTs')) == [f'{c}{FILE_ENDING}' for c in CASE_IDS[-3:]]
    assert all(filecmp.cmp(target / 'labelsTs' / f, source / 'labelsTs' / f, shallow=False)
               for f in os.listdir(target / 'labelsTs'))
    assert load_json(str(target / 'dataset.json'))['numTest'] == 3
    nested = load_json(os.path.join(make_ssl_dataset(4, '602', labeled='100%'), 'ssl_manifest.json'))['splits']
    assert nested['test'] == split['test'] and len(nested['labeled']) == NUM_CASES - 3
    with pytest.raises(ValueError, match='has its own held-out split'):  # never two held-out splits
        make_ssl_dataset(4, '603', labeled='2', test='2')


def test_a_held_out_case_that_is_also_a_training_case_is_refused(source, raw):
    _hold_out(source, CASE_IDS[-2:])
    image = f'{CASE_IDS[0]}_0000{FILE_ENDING}'
    (source / 'imagesTs' / image).write_bytes((source / 'imagesTr' / image).read_bytes())
    (source / 'labelsTs' / f'{CASE_IDS[0]}{FILE_ENDING}').write_bytes(b'')
    with pytest.raises(ValueError, match=rf"cases \['{CASE_IDS[0]}'\] are both training cases and held-out"):
        make_ssl_dataset(4, '601', labeled='2')
    assert os.listdir(raw) == [SOURCE]


def test_listed_labeled_cases_and_a_drawn_test_split_are_refused_together(source, raw):
    with pytest.raises(ValueError, match='--test does not combine with --labeled-cases'):
        make_ssl_dataset(4, '601', labeled_cases=CASE_IDS[0], test='2')
    assert os.listdir(raw) == [SOURCE]


def test_held_out_images_without_labels_are_not_copied_and_said_so(source, raw, capsys):
    (source / 'imagesTs').mkdir()  # as nnUNetv2_convert_MSD_dataset writes the Decathlon's unlabeled test images
    _write_image(np.zeros((4, 5, 6), np.float32), source / 'imagesTs' / f'hippo_900_0000{FILE_ENDING}')
    target = Path(make_ssl_dataset(4, '601', labeled='3', test='2', seed=0))
    assert sorted(os.listdir(target / 'imagesTs')) == \
        [f'{c}_0000{FILE_ENDING}' for c in plan_ssl_split(CASE_IDS, 3, 2, seed=0)['test']]
    assert 'imagesTs is not copied: without labelsTs' in capsys.readouterr().out


def test_held_out_images_with_some_labels_missing_are_refused(source, raw):
    _hold_out(source, CASE_IDS[-2:])
    (source / 'labelsTs' / f'{CASE_IDS[-1]}{FILE_ENDING}').unlink()
    with pytest.raises(ValueError, match=rf"held-out cases \['{CASE_IDS[-1]}'\] .* have no label"):
        make_ssl_dataset(4, '601', labeled='2')
    assert os.listdir(raw) == [SOURCE]


def test_training_cases_held_out_by_name_replace_the_sources_held_out_split(source, raw):
    """Choosing settings on a split of the training cases: the source's own held-out cases are left out entirely."""
    _hold_out(source, CASE_IDS[-3:])
    tuning = CASE_IDS[4:6]
    target = Path(make_ssl_dataset(4, '601', labeled_cases=CASE_IDS[0], test_cases=','.join(tuning)))
    manifest = load_json(str(target / 'ssl_manifest.json'))
    split = manifest['splits']
    assert split['test'] == tuning and split['labeled'] == CASE_IDS[:1]
    assert split['unlabeled'] == [case for case in CASE_IDS[1:-3] if case not in tuning]
    assert sorted(os.listdir(target / 'imagesTs')) == [f'{c}_0000{FILE_ENDING}' for c in tuning]
    assert manifest['test_cases_given'] == ','.join(tuning)
    drawn = load_json(os.path.join(make_ssl_dataset(4, '602', labeled='3', test_cases=','.join(tuning)),
                                   'ssl_manifest.json'))['splits']
    assert drawn['test'] == tuning and not set(drawn['labeled']) & set(tuning + CASE_IDS[-3:])
    with pytest.raises(ValueError, match=rf"cases \['{CASE_IDS[4]}'\] are listed both as labeled and as test"):
        make_ssl_dataset(4, '603', labeled_cases=CASE_IDS[4], test_cases=','.join(tuning))
    with pytest.raises(ValueError, match=rf"test cases \['{CASE_IDS[-1]}'\] are not training cases"):
        make_ssl_dataset(4, '604', labeled='2', test_cases=CASE_IDS[-1])  # a held-out case is never tuned on
    with pytest.raises(ValueError, match=r"either a number of test cases \(--test\) or their list"):
        make_ssl_dataset(4, '605', labeled='2', test='2', test_cases=CASE_IDS[4])
