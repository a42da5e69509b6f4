from gpustack_iac.cli import main

main()
